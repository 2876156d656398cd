package main

// Readiness for systemd: in a Type=notify unit running
// `zarrfs mount --foreground`, systemd sets NOTIFY_SOCKET and waits for
// READY=1, which is sent once the mount is live, so units ordered after this
// one (a training job) start only when the data can be read.

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifySystemd sends state to systemd's notify socket, if there is one.
// Failing to notify is logged, never fatal: the mount itself works.
func notifySystemd(log *slog.Logger, state string) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("cannot notify systemd", "state", state, "err", err)
	}
}

// notifyReady tells systemd the mount is live, with a status line for
// `systemctl status`.
func notifyReady(log *slog.Logger, url, mnt string) {
	notifySystemd(log, fmt.Sprintf("%s\nSTATUS=serving %s on %s", daemon.SdNotifyReady, url, mnt))
}

// notifyStopping tells systemd the mount is being taken down.
func notifyStopping(log *slog.Logger) {
	notifySystemd(log, daemon.SdNotifyStopping)
}
