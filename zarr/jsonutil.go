package zarr

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// MaxDims bounds the number of dimensions of an array. zarr itself sets no
// limit, but NumPy stops at 32 (64 since 2.0) and no real store comes close;
// the bound keeps hostile documents from costing memory in every key lookup.
const MaxDims = 32

// firstByte returns the first non-whitespace byte of a JSON value, 0 if none.
func firstByte(raw []byte) byte {
	t := bytes.TrimLeft(raw, " \t\r\n")
	if len(t) == 0 {
		return 0
	}
	return t[0]
}

func isJSONObject(raw json.RawMessage) bool { return firstByte(raw) == '{' }
func isJSONArray(raw json.RawMessage) bool  { return firstByte(raw) == '[' }
func isJSONNull(raw json.RawMessage) bool {
	return raw == nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// decodeDocument parses a whole metadata document, which must be a JSON object.
func decodeDocument(doc string, data []byte) (map[string]json.RawMessage, error) {
	if !json.Valid(data) {
		return nil, invalidf(doc, "", "is not valid JSON")
	}
	return decodeObject(doc, "", data)
}

// decodeObject decodes an already valid JSON value that must be an object.
func decodeObject(doc, field string, raw json.RawMessage) (map[string]json.RawMessage, error) {
	if !isJSONObject(raw) {
		what := "must be a JSON object"
		if field == "" {
			what = "is not a JSON object"
		}
		return nil, invalidf(doc, field, "%s", what)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalidf(doc, field, "is not a valid JSON object: %v", err)
	}
	return m, nil
}

func decodeString(raw json.RawMessage) (string, bool) {
	if firstByte(raw) != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

func decodeBool(raw json.RawMessage) (value, ok bool) {
	switch string(bytes.TrimSpace(raw)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// decodeInt accepts only JSON integers written without fraction or exponent.
func decodeInt(raw json.RawMessage) (int64, bool) {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	return n, err == nil
}

func decodeArray(doc, field string, raw json.RawMessage) ([]json.RawMessage, error) {
	if !isJSONArray(raw) {
		return nil, invalidf(doc, field, "must be a JSON array")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, invalidf(doc, field, "is not a valid JSON array: %v", err)
	}
	return items, nil
}

// decodeDims decodes a list of array dimensions (a shape or a chunk shape).
func decodeDims(doc, field string, raw json.RawMessage) ([]int64, error) {
	items, err := decodeArray(doc, field, raw)
	if err != nil {
		return nil, err
	}
	if len(items) > MaxDims {
		return nil, unsupportedf(doc, field, "has %d dimensions; at most %d are supported", len(items), MaxDims)
	}
	dims := make([]int64, len(items))
	for i, item := range items {
		n, ok := decodeInt(item)
		if !ok {
			return nil, invalidf(doc, field, "[%d] must be an integer, got %s", i, abbreviate(item))
		}
		dims[i] = n
	}
	return dims, nil
}

// abbreviate renders a JSON value for an error message without flooding it.
func abbreviate(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

// requireInt reads an integer member that must be present.
func requireInt(doc string, m map[string]json.RawMessage, field string) (int64, error) {
	raw, ok := m[field]
	if !ok {
		return 0, invalidf(doc, field, "is missing")
	}
	n, ok := decodeInt(raw)
	if !ok {
		return 0, invalidf(doc, field, "must be an integer, got %s", abbreviate(raw))
	}
	return n, nil
}
