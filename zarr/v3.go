package zarr

import (
	"encoding/json"
	"fmt"
	"sort"
)

// ParseV3Node parses a zarr v3 zarr.json document, of an array or a group.
// Arrays must use the "regular" chunk grid and the "default" (separator
// default "/") or "v2" (separator default ".") chunk key encoding.
func ParseV3Node(data []byte) (Kind, *Array, error) {
	n, err := parseV3("zarr.json", data)
	if err != nil {
		return 0, nil, err
	}
	return n.kind, n.array, nil
}

type v3Node struct {
	kind         Kind
	array        *Array
	consolidated json.RawMessage // the group's consolidated_metadata member, nil when absent
}

// v3Members are the members zarr v3 core defines for array and group documents.
var v3Members = map[string]bool{
	"zarr_format": true, "node_type": true, "attributes": true,
	"shape": true, "data_type": true, "chunk_grid": true, "chunk_key_encoding": true,
	"fill_value": true, "codecs": true, "storage_transformers": true, "dimension_names": true,
	"consolidated_metadata": true,
}

// extension is one use of a v3 extension point: a name and its configuration.
type extension struct {
	name           string
	config         json.RawMessage // nil when absent
	mustUnderstand bool
}

// decodeExtension accepts both the object form and the short-hand name form.
func decodeExtension(doc, field string, raw json.RawMessage) (extension, error) {
	if name, ok := decodeString(raw); ok {
		return extension{name: name, mustUnderstand: true}, nil
	}
	m, err := decodeObject(doc, field, raw)
	if err != nil {
		return extension{}, invalidf(doc, field, "must be a name or an object with a name")
	}
	e := extension{mustUnderstand: true}
	nameRaw, ok := m["name"]
	if !ok {
		return extension{}, invalidf(doc, field+".name", "is missing")
	}
	if e.name, ok = decodeString(nameRaw); !ok {
		return extension{}, invalidf(doc, field+".name", "must be a string, got %s", abbreviate(nameRaw))
	}
	if cfg, ok := m["configuration"]; ok && !isJSONNull(cfg) {
		if !isJSONObject(cfg) {
			return extension{}, invalidf(doc, field+".configuration", "must be a JSON object")
		}
		e.config = cfg
	}
	if mu, ok := m["must_understand"]; ok {
		if e.mustUnderstand, ok = decodeBool(mu); !ok {
			return extension{}, invalidf(doc, field+".must_understand", "must be true or false")
		}
	}
	return e, nil
}

// configOf returns an extension's configuration members (empty when absent).
func configOf(doc, field string, e extension) (map[string]json.RawMessage, error) {
	if e.config == nil {
		return map[string]json.RawMessage{}, nil
	}
	return decodeObject(doc, field+".configuration", e.config)
}

func parseV3(doc string, data []byte) (*v3Node, error) {
	m, err := decodeDocument(doc, data)
	if err != nil {
		return nil, err
	}
	format, err := requireInt(doc, m, "zarr_format")
	if err != nil {
		return nil, err
	}
	if format != 3 {
		return nil, unsupportedf(doc, "zarr_format", "is %d; zarr.json documents have zarr_format 3", format)
	}
	rawType, ok := m["node_type"]
	if !ok {
		return nil, invalidf(doc, "node_type", "is missing")
	}
	nodeType, _ := decodeString(rawType)
	if err := checkUnknownMembers(doc, m); err != nil {
		return nil, err
	}
	if raw, ok := m["attributes"]; ok && !isJSONNull(raw) && !isJSONObject(raw) {
		return nil, invalidf(doc, "attributes", "must be a JSON object")
	}
	switch nodeType {
	case "group":
		n := &v3Node{kind: KindGroup}
		if raw, ok := m["consolidated_metadata"]; ok && !isJSONNull(raw) {
			n.consolidated = raw
		}
		return n, nil
	case "array":
		a, err := parseV3Array(doc, m)
		if err != nil {
			return nil, err
		}
		return &v3Node{kind: KindArray, array: a}, nil
	}
	return nil, invalidf(doc, "node_type", "must be \"array\" or \"group\", got %s", abbreviate(rawType))
}

// checkUnknownMembers lets unknown members through (later minor versions may
// add some) except extensions that declare must_understand true.
func checkUnknownMembers(doc string, m map[string]json.RawMessage) error {
	names := make([]string, 0, len(m))
	for name := range m {
		if !v3Members[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		raw := m[name]
		if !isJSONObject(raw) {
			continue
		}
		obj, err := decodeObject(doc, name, raw)
		if err != nil {
			return err
		}
		if mu, ok := decodeBool(obj["must_understand"]); ok && mu {
			return unsupportedf(doc, name, "is an extension with must_understand true that zarrfs does not implement")
		}
	}
	return nil
}

func parseV3Array(doc string, m map[string]json.RawMessage) (*Array, error) {
	a := &Array{ZarrFormat: 3}
	var err error
	raw, ok := m["shape"]
	if !ok {
		return nil, invalidf(doc, "shape", "is missing")
	}
	if a.Shape, err = decodeDims(doc, "shape", raw); err != nil {
		return nil, err
	}

	raw, ok = m["data_type"]
	if !ok {
		return nil, invalidf(doc, "data_type", "is missing")
	}
	dt, err := decodeExtension(doc, "data_type", raw)
	if err != nil {
		return nil, err
	}
	a.DataType = dt.name

	const chunkShapeField = "chunk_grid.configuration.chunk_shape"
	raw, ok = m["chunk_grid"]
	if !ok {
		return nil, invalidf(doc, "chunk_grid", "is missing")
	}
	grid, err := decodeExtension(doc, "chunk_grid", raw)
	if err != nil {
		return nil, err
	}
	if grid.name != "regular" {
		return nil, unsupportedf(doc, "chunk_grid.name", "is %q; only the \"regular\" chunk grid is supported", grid.name)
	}
	gridConfig, err := configOf(doc, "chunk_grid", grid)
	if err != nil {
		return nil, err
	}
	raw, ok = gridConfig["chunk_shape"]
	if !ok {
		return nil, invalidf(doc, chunkShapeField, "is missing")
	}
	if a.ChunkShape, err = decodeDims(doc, chunkShapeField, raw); err != nil {
		return nil, err
	}

	if a.KeyEncoding, err = parseV3KeyEncoding(doc, m); err != nil {
		return nil, err
	}
	if err := a.validate(doc, "shape", chunkShapeField); err != nil {
		return nil, err
	}

	if raw, ok := m["dimension_names"]; ok && !isJSONNull(raw) {
		names, err := decodeArray(doc, "dimension_names", raw)
		if err != nil {
			return nil, err
		}
		if len(names) != len(a.Shape) {
			return nil, invalidf(doc, "dimension_names", "has %d names but shape has %d dimensions", len(names), len(a.Shape))
		}
	}

	if raw, ok := m["storage_transformers"]; ok && !isJSONNull(raw) {
		items, err := decodeArray(doc, "storage_transformers", raw)
		if err != nil {
			return nil, err
		}
		for i, item := range items {
			field := fmt.Sprintf("storage_transformers[%d]", i)
			st, err := decodeExtension(doc, field, item)
			if err != nil {
				return nil, err
			}
			// A storage transformer changes which keys hold the chunks, so one we
			// do not implement makes every chunk name a guess.
			if st.mustUnderstand {
				return nil, unsupportedf(doc, field, "is storage transformer %q, which zarrfs does not implement", st.name)
			}
		}
	}

	raw, ok = m["codecs"]
	if !ok {
		return nil, invalidf(doc, "codecs", "is missing")
	}
	if a.Shard, err = parseCodecs(doc, raw, a.ChunkShape); err != nil {
		return nil, err
	}
	return a, nil
}

func parseV3KeyEncoding(doc string, m map[string]json.RawMessage) (KeyEncoding, error) {
	raw, ok := m["chunk_key_encoding"]
	if !ok {
		return KeyEncoding{}, invalidf(doc, "chunk_key_encoding", "is missing")
	}
	e, err := decodeExtension(doc, "chunk_key_encoding", raw)
	if err != nil {
		return KeyEncoding{}, err
	}
	var enc KeyEncoding
	switch e.name {
	case "default":
		enc = KeyEncoding{Prefix: "c", Separator: "/"}
	case "v2":
		enc = KeyEncoding{Separator: "."}
	default:
		return KeyEncoding{}, unsupportedf(doc, "chunk_key_encoding.name", "is %q; only \"default\" and \"v2\" are supported", e.name)
	}
	config, err := configOf(doc, "chunk_key_encoding", e)
	if err != nil {
		return KeyEncoding{}, err
	}
	if raw, ok := config["separator"]; ok {
		sep, isString := decodeString(raw)
		if !isString || (sep != "." && sep != "/") {
			return KeyEncoding{}, invalidf(doc, "chunk_key_encoding.configuration.separator", "must be \".\" or \"/\", got %s", abbreviate(raw))
		}
		enc.Separator = sep
	}
	return enc, nil
}

// parseCodecs finds the sharding_indexed codec, if any, in an array's codec chain.
func parseCodecs(doc string, raw json.RawMessage, chunkShape []int64) (*ShardInfo, error) {
	items, err := decodeArray(doc, "codecs", raw)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, invalidf(doc, "codecs", "is empty; it must contain an array -> bytes codec")
	}
	codecs := make([]extension, len(items))
	for i, item := range items {
		if codecs[i], err = decodeExtension(doc, fmt.Sprintf("codecs[%d]", i), item); err != nil {
			return nil, err
		}
	}
	// The sharding codec sees the chunk after the array -> array codecs before
	// it, so its inner chunk shape is relative to the transposed shard shape.
	shape := append([]int64(nil), chunkShape...)
	for i, c := range codecs {
		if c.name != "sharding_indexed" {
			if c.name == "transpose" {
				if shape, err = transposeShape(doc, fmt.Sprintf("codecs[%d]", i), c, shape); err != nil {
					return nil, err
				}
			}
			continue
		}
		for j := i + 1; j < len(codecs); j++ {
			if codecs[j].name == "sharding_indexed" {
				return nil, invalidf(doc, "codecs", "has more than one sharding_indexed codec")
			}
		}
		info, err := parseSharding(doc, fmt.Sprintf("codecs[%d]", i), c, shape)
		if err != nil {
			return nil, err
		}
		if i < len(codecs)-1 && info.IndexUnsupported == "" {
			info.IndexUnsupported = fmt.Sprintf("codec %q after sharding_indexed encodes the whole shard", codecs[i+1].name)
		}
		return info, nil
	}
	return nil, nil
}

func transposeShape(doc, field string, c extension, shape []int64) ([]int64, error) {
	config, err := configOf(doc, field, c)
	if err != nil {
		return nil, err
	}
	field += ".configuration.order"
	raw, ok := config["order"]
	if !ok {
		return nil, invalidf(doc, field, "is missing")
	}
	// Early v3 drafts allowed "C" and "F" for the identity and the reversal.
	if s, ok := decodeString(raw); ok {
		switch s {
		case "C":
			return shape, nil
		case "F":
			out := make([]int64, len(shape))
			for i := range shape {
				out[i] = shape[len(shape)-1-i]
			}
			return out, nil
		}
		return nil, invalidf(doc, field, "must be a permutation of the dimensions, got %s", abbreviate(raw))
	}
	order, err := decodeDims(doc, field, raw)
	if err != nil {
		return nil, err
	}
	if len(order) != len(shape) {
		return nil, invalidf(doc, field, "has %d entries but the chunk has %d dimensions", len(order), len(shape))
	}
	seen := make([]bool, len(shape))
	out := make([]int64, len(shape))
	for i, d := range order {
		if d < 0 || d >= int64(len(shape)) || seen[d] {
			return nil, invalidf(doc, field, "must be a permutation of 0..%d, got %s", len(shape)-1, abbreviate(raw))
		}
		seen[d] = true
		out[i] = shape[d]
	}
	return out, nil
}

func parseSharding(doc, field string, c extension, shardShape []int64) (*ShardInfo, error) {
	config, err := configOf(doc, field, c)
	if err != nil {
		return nil, err
	}
	field += ".configuration"
	info := &ShardInfo{shardShape: shardShape}

	raw, ok := config["chunk_shape"]
	if !ok {
		return nil, invalidf(doc, field+".chunk_shape", "is missing")
	}
	if info.InnerChunkShape, err = decodeDims(doc, field+".chunk_shape", raw); err != nil {
		return nil, err
	}
	if len(info.InnerChunkShape) != len(shardShape) {
		return nil, invalidf(doc, field+".chunk_shape", "has %d dimensions but the shard shape has %d", len(info.InnerChunkShape), len(shardShape))
	}
	for i, inner := range info.InnerChunkShape {
		if inner <= 0 {
			return nil, invalidf(doc, field+".chunk_shape", "[%d] is %d; chunk sizes must be positive", i, inner)
		}
		if shardShape[i]%inner != 0 {
			return nil, invalidf(doc, field+".chunk_shape", "[%d] is %d, which does not divide the shard size %d", i, inner, shardShape[i])
		}
	}

	raw, ok = config["codecs"]
	if !ok {
		return nil, invalidf(doc, field+".codecs", "is missing")
	}
	if inner, err := decodeArray(doc, field+".codecs", raw); err != nil {
		return nil, err
	} else if len(inner) == 0 {
		return nil, invalidf(doc, field+".codecs", "is empty; it must contain an array -> bytes codec")
	}

	if raw, ok := config["index_location"]; ok {
		loc, _ := decodeString(raw)
		switch loc {
		case "start":
			info.IndexAtStart = true
		case "end":
		default:
			return nil, invalidf(doc, field+".index_location", "must be \"start\" or \"end\", got %s", abbreviate(raw))
		}
	}

	raw, ok = config["index_codecs"]
	if !ok {
		return nil, invalidf(doc, field+".index_codecs", "is missing")
	}
	if err := parseIndexCodecs(doc, field+".index_codecs", raw, info); err != nil {
		return nil, err
	}

	if info.IndexUnsupported == "" {
		if _, ok := shardIndexSize(info.ChunksPerShard(nil), info.IndexCRC32C); !ok {
			return nil, unsupportedf(doc, field+".chunk_shape", "gives a shard index larger than 2^63-1 bytes")
		}
	}
	return info, nil
}

// parseIndexCodecs accepts the layouts ParseShardIndex can read: "bytes"
// (either endianness), optionally followed by "crc32c". Anything else is valid
// zarr but leaves the index unreadable here, which only costs ranged reads.
func parseIndexCodecs(doc, field string, raw json.RawMessage, info *ShardInfo) error {
	items, err := decodeArray(doc, field, raw)
	if err != nil {
		return err
	}
	if len(items) == 0 {
		return invalidf(doc, field, "is empty; it must contain an array -> bytes codec")
	}
	for i, item := range items {
		itemField := fmt.Sprintf("%s[%d]", field, i)
		c, err := decodeExtension(doc, itemField, item)
		if err != nil {
			return err
		}
		if info.IndexUnsupported != "" {
			continue
		}
		switch {
		case i == 0 && c.name == "bytes":
			config, err := configOf(doc, itemField, c)
			if err != nil {
				return err
			}
			if raw, ok := config["endian"]; ok {
				endian, _ := decodeString(raw)
				switch endian {
				case "little":
				case "big":
					info.IndexBigEndian = true
				default:
					return invalidf(doc, itemField+".configuration.endian", "must be \"little\" or \"big\", got %s", abbreviate(raw))
				}
			}
		case i == 1 && c.name == "crc32c":
			info.IndexCRC32C = true
		default:
			info.IndexUnsupported = fmt.Sprintf("shard index codec %q at position %d is not supported", c.name, i)
		}
	}
	return nil
}
