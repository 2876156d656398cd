package zarr

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseZArray(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want *Array
	}{
		{"dot separator, F order",
			`{"zarr_format":2,"shape":[10,3],"chunks":[4,3],"dtype":"<i2","order":"F","dimension_separator":".","compressor":null,"fill_value":0,"filters":null}`,
			&Array{ZarrFormat: 2, Shape: []int64{10, 3}, ChunkShape: []int64{4, 3}, KeyEncoding: KeyEncoding{Separator: "."}, DataType: "<i2", Order: "F"}},
		{"slash separator",
			`{"zarr_format":2,"shape":[2,2],"chunks":[1,1],"dtype":"|u1","order":"C","dimension_separator":"/"}`,
			&Array{ZarrFormat: 2, Shape: []int64{2, 2}, ChunkShape: []int64{1, 1}, KeyEncoding: KeyEncoding{Separator: "/"}, DataType: "|u1", Order: "C"}},
		{"legacy: no separator",
			`{"zarr_format":2,"shape":[2],"chunks":[1],"dtype":"|O","order":"C","filters":[{"id":"vlen-utf8"}]}`,
			&Array{ZarrFormat: 2, Shape: []int64{2}, ChunkShape: []int64{1}, KeyEncoding: KeyEncoding{Separator: ".", SeparatorUnset: true}, DataType: "|O", Order: "C"}},
		{"null separator is legacy",
			`{"zarr_format":2,"shape":[2],"chunks":[1],"dtype":"<f8","dimension_separator":null}`,
			&Array{ZarrFormat: 2, Shape: []int64{2}, ChunkShape: []int64{1}, KeyEncoding: KeyEncoding{Separator: ".", SeparatorUnset: true}, DataType: "<f8"}},
		{"0-d",
			`{"zarr_format":2,"shape":[],"chunks":[],"dtype":"<f8","order":"C"}`,
			&Array{ZarrFormat: 2, Shape: []int64{}, ChunkShape: []int64{}, KeyEncoding: KeyEncoding{Separator: ".", SeparatorUnset: true}, DataType: "<f8", Order: "C"}},
		{"structured dtype",
			`{"zarr_format":2,"shape":[5],"chunks":[5],"dtype":[["x", "<i4"], ["y", "<f8", [2, 2]]],"order":"C"}`,
			&Array{ZarrFormat: 2, Shape: []int64{5}, ChunkShape: []int64{5}, KeyEncoding: KeyEncoding{Separator: ".", SeparatorUnset: true}, DataType: `[["x","<i4"],["y","<f8",[2,2]]]`, Order: "C"}},
		{"empty dimension, unknown extra member",
			`{"zarr_format":2,"shape":[0],"chunks":[7],"dtype":"<U4","future":{"must_understand":true}}`,
			&Array{ZarrFormat: 2, Shape: []int64{0}, ChunkShape: []int64{7}, KeyEncoding: KeyEncoding{Separator: ".", SeparatorUnset: true}, DataType: "<U4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseZArray([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// errorCase is a document that must be rejected with an error that wraps
// kind and whose message contains msg.
type errorCase struct {
	name string
	doc  string
	kind error
	msg  string
}

func checkErrorCases(t *testing.T, parse func([]byte) error, cases []errorCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			err := parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.msg)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q does not wrap %v", err, tt.kind)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
}

func TestParseZArrayErrors(t *testing.T) {
	const ok = `"zarr_format":2,"dtype":"<i2"`
	checkErrorCases(t, func(b []byte) error { _, err := ParseZArray(b); return err }, []errorCase{
		{"not JSON", `{"zarr_format":2,`, ErrInvalid, ".zarray: is not valid JSON"},
		{"not an object", `[1,2]`, ErrInvalid, ".zarray: is not a JSON object"},
		{"null", `null`, ErrInvalid, ".zarray: is not a JSON object"},
		{"wrong format", `{"zarr_format":3,"shape":[1],"chunks":[1],"dtype":"<i2"}`, ErrUnsupported, ".zarray: zarr_format is 3"},
		{"format missing", `{"shape":[1],"chunks":[1],"dtype":"<i2"}`, ErrInvalid, ".zarray: zarr_format is missing"},
		{"format not int", `{"zarr_format":"2","shape":[1],"chunks":[1],"dtype":"<i2"}`, ErrInvalid, "zarr_format must be an integer"},
		{"shape missing", `{` + ok + `,"chunks":[1]}`, ErrInvalid, ".zarray: shape is missing"},
		{"chunks missing", `{` + ok + `,"shape":[1]}`, ErrInvalid, ".zarray: chunks is missing"},
		{"dtype missing", `{"zarr_format":2,"shape":[1],"chunks":[1]}`, ErrInvalid, ".zarray: dtype is missing"},
		{"dtype number", `{"zarr_format":2,"shape":[1],"chunks":[1],"dtype":4}`, ErrInvalid, "dtype must be a string or a list"},
		{"dtype empty", `{"zarr_format":2,"shape":[1],"chunks":[1],"dtype":""}`, ErrInvalid, "dtype is empty"},
		{"dtype empty struct", `{"zarr_format":2,"shape":[1],"chunks":[1],"dtype":[]}`, ErrInvalid, "empty structured dtype"},
		{"dtype bad field", `{"zarr_format":2,"shape":[1],"chunks":[1],"dtype":["x"]}`, ErrInvalid, "dtype [0] must be a [name, type] list"},
		{"negative shape", `{` + ok + `,"shape":[-1],"chunks":[1]}`, ErrInvalid, ".zarray: shape [0] is -1; dimensions cannot be negative"},
		{"zero chunk", `{` + ok + `,"shape":[3],"chunks":[0]}`, ErrInvalid, ".zarray: chunks [0] is 0; chunk sizes must be positive"},
		{"negative chunk", `{` + ok + `,"shape":[3,3],"chunks":[1,-2]}`, ErrInvalid, "chunks [1] is -2"},
		{"float shape", `{` + ok + `,"shape":[3.0],"chunks":[1]}`, ErrInvalid, "shape [0] must be an integer, got 3.0"},
		{"exponent shape", `{` + ok + `,"shape":[1e3],"chunks":[1]}`, ErrInvalid, "shape [0] must be an integer"},
		{"shape too large for int64", `{` + ok + `,"shape":[9223372036854775808],"chunks":[1]}`, ErrInvalid, "shape [0] must be an integer"},
		{"shape not a list", `{` + ok + `,"shape":3,"chunks":[1]}`, ErrInvalid, "shape must be a JSON array"},
		{"dimension mismatch", `{` + ok + `,"shape":[3,3],"chunks":[1]}`, ErrInvalid, ".zarray: chunks has 1 dimensions but shape has 2"},
		{"too many dims", `{` + ok + `,"shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"chunks":[1]}`, ErrUnsupported, "shape has 33 dimensions; at most 32"},
		{"chunk count overflow", `{` + ok + `,"shape":[9223372036854775807,9223372036854775807],"chunks":[1,1]}`, ErrUnsupported, "gives more than 2^63-1 chunks"},
		{"bad separator", `{` + ok + `,"shape":[3],"chunks":[1],"dimension_separator":"_"}`, ErrInvalid, `dimension_separator must be "." or "/", got "_"`},
		{"separator not string", `{` + ok + `,"shape":[3],"chunks":[1],"dimension_separator":1}`, ErrInvalid, "dimension_separator must be"},
		{"bad order", `{` + ok + `,"shape":[3],"chunks":[1],"order":"K"}`, ErrInvalid, `order must be "C" or "F", got "K"`},
	})
}

func TestParseZGroup(t *testing.T) {
	if err := ParseZGroup([]byte(`{"zarr_format": 2}`)); err != nil {
		t.Errorf("valid .zgroup: %v", err)
	}
	checkErrorCases(t, ParseZGroup, []errorCase{
		{"wrong format", `{"zarr_format":3}`, ErrUnsupported, ".zgroup: zarr_format is 3"},
		{"missing format", `{}`, ErrInvalid, ".zgroup: zarr_format is missing"},
		{"not an object", `"group"`, ErrInvalid, ".zgroup: is not a JSON object"},
	})
}

// v3Array returns a valid v3 array document with members replaced or added.
func v3Array(overrides map[string]string) string {
	members := map[string]string{
		"zarr_format":        `3`,
		"node_type":          `"array"`,
		"shape":              `[10, 10]`,
		"data_type":          `"int16"`,
		"chunk_grid":         `{"name":"regular","configuration":{"chunk_shape":[4,5]}}`,
		"chunk_key_encoding": `{"name":"default","configuration":{"separator":"/"}}`,
		"fill_value":         `0`,
		"codecs":             `[{"name":"bytes","configuration":{"endian":"little"}}]`,
	}
	for k, v := range overrides {
		if v == "" {
			delete(members, k)
		} else {
			members[k] = v
		}
	}
	var b strings.Builder
	b.WriteString("{")
	first := true
	for _, k := range []string{"zarr_format", "node_type", "shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs"} {
		if v, ok := members[k]; ok {
			if !first {
				b.WriteString(",")
			}
			first = false
			b.WriteString(`"` + k + `":` + v)
			delete(members, k)
		}
	}
	for k, v := range members {
		if !first {
			b.WriteString(",")
		}
		first = false
		b.WriteString(`"` + k + `":` + v)
	}
	b.WriteString("}")
	return b.String()
}

const shardingCodec = `[{"name":"sharding_indexed","configuration":{"chunk_shape":[2,5],"codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"gzip","configuration":{"level":5}}],"index_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"crc32c"}],"index_location":"end"}}]`

func TestParseV3Node(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		kind Kind
		want *Array
	}{
		{"group", `{"zarr_format":3,"node_type":"group","attributes":{"a":1}}`, KindGroup, nil},
		{"group with unknown member", `{"zarr_format":3,"node_type":"group","extra":{"must_understand":false},"other":[1]}`, KindGroup, nil},
		{"default encoding", v3Array(nil), KindArray,
			&Array{ZarrFormat: 3, Shape: []int64{10, 10}, ChunkShape: []int64{4, 5}, KeyEncoding: KeyEncoding{Prefix: "c", Separator: "/"}, DataType: "int16"}},
		{"default encoding, separator omitted", v3Array(map[string]string{"chunk_key_encoding": `{"name":"default"}`}), KindArray,
			&Array{ZarrFormat: 3, Shape: []int64{10, 10}, ChunkShape: []int64{4, 5}, KeyEncoding: KeyEncoding{Prefix: "c", Separator: "/"}, DataType: "int16"}},
		{"default encoding with .", v3Array(map[string]string{"chunk_key_encoding": `{"name":"default","configuration":{"separator":"."}}`}), KindArray,
			&Array{ZarrFormat: 3, Shape: []int64{10, 10}, ChunkShape: []int64{4, 5}, KeyEncoding: KeyEncoding{Prefix: "c", Separator: "."}, DataType: "int16"}},
		{"v2 encoding short-hand", v3Array(map[string]string{"chunk_key_encoding": `"v2"`}), KindArray,
			&Array{ZarrFormat: 3, Shape: []int64{10, 10}, ChunkShape: []int64{4, 5}, KeyEncoding: KeyEncoding{Separator: "."}, DataType: "int16"}},
		{"v2 encoding with /", v3Array(map[string]string{"chunk_key_encoding": `{"name":"v2","configuration":{"separator":"/"}}`}), KindArray,
			&Array{ZarrFormat: 3, Shape: []int64{10, 10}, ChunkShape: []int64{4, 5}, KeyEncoding: KeyEncoding{Separator: "/"}, DataType: "int16"}},
		{"0-d, extension data type, optional members", v3Array(map[string]string{
			"shape": `[]`, "chunk_grid": `{"name":"regular","configuration":{"chunk_shape":[]}}`,
			"data_type":       `{"name":"urn:example:datetime","configuration":{"unit":"ns"}}`,
			"dimension_names": `[]`, "storage_transformers": `[]`, "attributes": `{}`,
			"future_thing": `{"must_understand":false,"x":1}`, "future_flag": `true`}), KindArray,
			&Array{ZarrFormat: 3, Shape: []int64{}, ChunkShape: []int64{}, KeyEncoding: KeyEncoding{Prefix: "c", Separator: "/"}, DataType: "urn:example:datetime"}},
		{"storage transformer that may be ignored", v3Array(map[string]string{"storage_transformers": `[{"name":"x","must_understand":false}]`}), KindArray,
			&Array{ZarrFormat: 3, Shape: []int64{10, 10}, ChunkShape: []int64{4, 5}, KeyEncoding: KeyEncoding{Prefix: "c", Separator: "/"}, DataType: "int16"}},
		{"sharded", v3Array(map[string]string{"codecs": shardingCodec}), KindArray,
			&Array{ZarrFormat: 3, Shape: []int64{10, 10}, ChunkShape: []int64{4, 5}, KeyEncoding: KeyEncoding{Prefix: "c", Separator: "/"}, DataType: "int16",
				Shard: &ShardInfo{InnerChunkShape: []int64{2, 5}, IndexCRC32C: true, shardShape: []int64{4, 5}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, a, err := ParseV3Node([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.kind || !reflect.DeepEqual(a, tt.want) {
				t.Errorf("got %v %+v (shard %+v), want %v %+v", kind, a, shardOf(a), tt.kind, tt.want)
			}
		})
	}
}

func shardOf(a *Array) *ShardInfo {
	if a == nil {
		return nil
	}
	return a.Shard
}

func TestParseV3NodeErrors(t *testing.T) {
	sharding := func(config string) string {
		return v3Array(map[string]string{"codecs": `[{"name":"sharding_indexed","configuration":` + config + `}]`})
	}
	const idx = `"index_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"crc32c"}]`
	const inner = `"codecs":[{"name":"bytes"}]`
	checkErrorCases(t, func(b []byte) error { _, _, err := ParseV3Node(b); return err }, []errorCase{
		{"not JSON", `{`, ErrInvalid, "zarr.json: is not valid JSON"},
		{"v2 document", `{"zarr_format":2}`, ErrUnsupported, "zarr.json: zarr_format is 2"},
		{"node type missing", `{"zarr_format":3}`, ErrInvalid, "zarr.json: node_type is missing"},
		{"node type unknown", `{"zarr_format":3,"node_type":"dataset"}`, ErrInvalid, `zarr.json: node_type must be "array" or "group", got "dataset"`},
		{"attributes not object", `{"zarr_format":3,"node_type":"group","attributes":[]}`, ErrInvalid, "zarr.json: attributes must be a JSON object"},
		{"must understand extension", `{"zarr_format":3,"node_type":"group","fancy":{"name":"fancy","must_understand":true}}`, ErrUnsupported, "zarr.json: fancy is an extension with must_understand true"},
		{"must understand extension on array", v3Array(map[string]string{"fancy": `{"must_understand":true}`}), ErrUnsupported, "zarr.json: fancy is an extension with must_understand true"},
		{"chunk shape dims", v3Array(map[string]string{"shape": `[10,10,10]`}), ErrInvalid, "zarr.json: chunk_grid.configuration.chunk_shape has 2 dimensions but shape has 3"},
		{"negative shape", v3Array(map[string]string{"shape": `[10,-10]`}), ErrInvalid, "zarr.json: shape [1] is -10; dimensions cannot be negative"},
		{"zero chunk", v3Array(map[string]string{"chunk_grid": `{"name":"regular","configuration":{"chunk_shape":[0,5]}}`}), ErrInvalid, "zarr.json: chunk_grid.configuration.chunk_shape [0] is 0; chunk sizes must be positive"},
		{"too many dims", v3Array(map[string]string{"shape": `[` + strings.Repeat("1,", 40) + `1]`}), ErrUnsupported, "zarr.json: shape has 41 dimensions"},
		{"chunk count overflow", v3Array(map[string]string{"shape": `[9223372036854775807,9223372036854775807]`, "chunk_grid": `{"name":"regular","configuration":{"chunk_shape":[1,1]}}`}), ErrUnsupported, "more than 2^63-1 chunks"},
		{"shape missing", v3Array(map[string]string{"shape": ""}), ErrInvalid, "zarr.json: shape is missing"},
		{"data type missing", v3Array(map[string]string{"data_type": ""}), ErrInvalid, "zarr.json: data_type is missing"},
		{"data type number", v3Array(map[string]string{"data_type": `7`}), ErrInvalid, "zarr.json: data_type must be a name or an object"},
		{"chunk grid missing", v3Array(map[string]string{"chunk_grid": ""}), ErrInvalid, "zarr.json: chunk_grid is missing"},
		{"chunk grid rectilinear", v3Array(map[string]string{"chunk_grid": `{"name":"rectilinear","configuration":{}}`}), ErrUnsupported, `zarr.json: chunk_grid.name is "rectilinear"; only the "regular" chunk grid is supported`},
		{"chunk grid no name", v3Array(map[string]string{"chunk_grid": `{"configuration":{}}`}), ErrInvalid, "zarr.json: chunk_grid.name is missing"},
		{"chunk shape missing", v3Array(map[string]string{"chunk_grid": `{"name":"regular"}`}), ErrInvalid, "zarr.json: chunk_grid.configuration.chunk_shape is missing"},
		{"chunk grid config not object", v3Array(map[string]string{"chunk_grid": `{"name":"regular","configuration":[1]}`}), ErrInvalid, "chunk_grid.configuration must be a JSON object"},
		{"key encoding missing", v3Array(map[string]string{"chunk_key_encoding": ""}), ErrInvalid, "zarr.json: chunk_key_encoding is missing"},
		{"key encoding unknown", v3Array(map[string]string{"chunk_key_encoding": `{"name":"morton"}`}), ErrUnsupported, `zarr.json: chunk_key_encoding.name is "morton"`},
		{"bad separator", v3Array(map[string]string{"chunk_key_encoding": `{"name":"default","configuration":{"separator":"-"}}`}), ErrInvalid, `zarr.json: chunk_key_encoding.configuration.separator must be "." or "/", got "-"`},
		{"codecs missing", v3Array(map[string]string{"codecs": ""}), ErrInvalid, "zarr.json: codecs is missing"},
		{"codecs empty", v3Array(map[string]string{"codecs": `[]`}), ErrInvalid, "zarr.json: codecs is empty"},
		{"codec without name", v3Array(map[string]string{"codecs": `[{"configuration":{}}]`}), ErrInvalid, "zarr.json: codecs[0].name is missing"},
		{"codec must_understand not bool", v3Array(map[string]string{"codecs": `[{"name":"bytes","must_understand":"yes"}]`}), ErrInvalid, "codecs[0].must_understand must be true or false"},
		{"storage transformer", v3Array(map[string]string{"storage_transformers": `[{"name":"sharding"}]`}), ErrUnsupported, `zarr.json: storage_transformers[0] is storage transformer "sharding"`},
		{"storage transformer must understand", v3Array(map[string]string{"storage_transformers": `["x", {"name":"y","must_understand":true}]`}), ErrUnsupported, `storage_transformers[0] is storage transformer "x"`},
		{"dimension names length", v3Array(map[string]string{"dimension_names": `["x"]`}), ErrInvalid, "zarr.json: dimension_names has 1 names but shape has 2 dimensions"},
		{"two sharding codecs", v3Array(map[string]string{"codecs": `[{"name":"sharding_indexed","configuration":{"chunk_shape":[4,5],` + inner + `,` + idx + `}},{"name":"sharding_indexed","configuration":{}}]`}), ErrInvalid, "more than one sharding_indexed codec"},
		{"shard config missing", sharding(`null`), ErrInvalid, "codecs[0].configuration.chunk_shape is missing"},
		{"inner shape dims", sharding(`{"chunk_shape":[2],` + inner + `,` + idx + `}`), ErrInvalid, "zarr.json: codecs[0].configuration.chunk_shape has 1 dimensions but the shard shape has 2"},
		{"inner shape does not divide", sharding(`{"chunk_shape":[3,5],` + inner + `,` + idx + `}`), ErrInvalid, "codecs[0].configuration.chunk_shape [0] is 3, which does not divide the shard size 4"},
		{"inner shape zero", sharding(`{"chunk_shape":[0,5],` + inner + `,` + idx + `}`), ErrInvalid, "chunk_shape [0] is 0; chunk sizes must be positive"},
		{"inner codecs missing", sharding(`{"chunk_shape":[2,5],` + idx + `}`), ErrInvalid, "codecs[0].configuration.codecs is missing"},
		{"inner codecs empty", sharding(`{"chunk_shape":[2,5],"codecs":[],` + idx + `}`), ErrInvalid, "codecs[0].configuration.codecs is empty"},
		{"index codecs missing", sharding(`{"chunk_shape":[2,5],` + inner + `}`), ErrInvalid, "codecs[0].configuration.index_codecs is missing"},
		{"index codecs empty", sharding(`{"chunk_shape":[2,5],` + inner + `,"index_codecs":[]}`), ErrInvalid, "index_codecs is empty"},
		{"index location", sharding(`{"chunk_shape":[2,5],` + inner + `,` + idx + `,"index_location":"middle"}`), ErrInvalid, `index_location must be "start" or "end", got "middle"`},
		{"index endian", sharding(`{"chunk_shape":[2,5],` + inner + `,"index_codecs":[{"name":"bytes","configuration":{"endian":"native"}}]}`), ErrInvalid, `index_codecs[0].configuration.endian must be "little" or "big"`},
		{"index size overflow", v3Array(map[string]string{
			"shape": `[9223372036854775807,9223372036854775807]`, "chunk_grid": `{"name":"regular","configuration":{"chunk_shape":[9223372036854775807,9223372036854775807]}}`,
			"codecs": `[{"name":"sharding_indexed","configuration":{"chunk_shape":[1,1],` + inner + `,` + idx + `}}]`}), ErrUnsupported, "gives a shard index larger than 2^63-1 bytes"},
		{"bad transpose", v3Array(map[string]string{"codecs": `[{"name":"transpose","configuration":{"order":[0,0]}},{"name":"bytes"}]`}), ErrInvalid, "codecs[0].configuration.order must be a permutation of 0..1"},
		{"transpose length", v3Array(map[string]string{"codecs": `[{"name":"transpose","configuration":{"order":[0]}},{"name":"bytes"}]`}), ErrInvalid, "order has 1 entries but the chunk has 2 dimensions"},
	})
}

func TestParseV3Sharding(t *testing.T) {
	tests := []struct {
		name        string
		codecs      string
		shape       string
		wantCPS     []int64
		wantSize    int64
		start, big  bool
		unsupported string
	}{
		{"fixture layout", shardingCodec, "", []int64{2, 1}, 2*16 + 4, false, false, ""},
		{"index at start, no crc", `[{"name":"sharding_indexed","configuration":{"chunk_shape":[1,1],"codecs":["bytes"],"index_codecs":["bytes"],"index_location":"start"}}]`, "", []int64{4, 5}, 20 * 16, true, false, ""},
		{"big-endian index", `[{"name":"sharding_indexed","configuration":{"chunk_shape":[4,1],"codecs":["bytes"],"index_codecs":[{"name":"bytes","configuration":{"endian":"big"}},"crc32c"]}}]`, "", []int64{1, 5}, 5*16 + 4, false, true, ""},
		{"transpose before sharding", `[{"name":"transpose","configuration":{"order":[1,0]}},{"name":"sharding_indexed","configuration":{"chunk_shape":[5,2],"codecs":["bytes"],"index_codecs":["bytes","crc32c"]}}]`, "", []int64{1, 2}, 2*16 + 4, false, false, ""},
		{"F transpose before sharding", `[{"name":"transpose","configuration":{"order":"F"}},{"name":"sharding_indexed","configuration":{"chunk_shape":[5,1],"codecs":["bytes"],"index_codecs":["bytes"]}}]`, "", []int64{1, 4}, 4 * 16, false, false, ""},
		{"codec after sharding", `[{"name":"sharding_indexed","configuration":{"chunk_shape":[2,5],"codecs":["bytes"],"index_codecs":["bytes","crc32c"]}},{"name":"gzip"}]`, "", []int64{2, 1}, -1, false, false, `codec "gzip" after sharding_indexed`},
		{"compressed index", `[{"name":"sharding_indexed","configuration":{"chunk_shape":[2,5],"codecs":["bytes"],"index_codecs":["bytes","gzip"]}}]`, "", []int64{2, 1}, -1, false, false, `shard index codec "gzip" at position 1`},
		{"transposed index", `[{"name":"sharding_indexed","configuration":{"chunk_shape":[2,5],"codecs":["bytes"],"index_codecs":[{"name":"transpose","configuration":{"order":[1,0,2]}},"bytes"]}}]`, "", []int64{2, 1}, -1, false, false, `shard index codec "transpose" at position 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, a, err := ParseV3Node([]byte(v3Array(map[string]string{"codecs": tt.codecs})))
			if err != nil {
				t.Fatal(err)
			}
			s := a.Shard
			if s == nil {
				t.Fatal("Shard is nil")
			}
			if got := s.ChunksPerShard(a); !reflect.DeepEqual(got, tt.wantCPS) {
				t.Errorf("ChunksPerShard = %v, want %v", got, tt.wantCPS)
			}
			if got := s.IndexSize(a); got != tt.wantSize {
				t.Errorf("IndexSize = %d, want %d", got, tt.wantSize)
			}
			if s.IndexAtStart != tt.start || s.IndexBigEndian != tt.big {
				t.Errorf("IndexAtStart %v IndexBigEndian %v, want %v %v", s.IndexAtStart, s.IndexBigEndian, tt.start, tt.big)
			}
			if !strings.Contains(s.IndexUnsupported, tt.unsupported) || (tt.unsupported == "") != (s.IndexUnsupported == "") {
				t.Errorf("IndexUnsupported = %q, want it to contain %q", s.IndexUnsupported, tt.unsupported)
			}
		})
	}
	_, a, err := ParseV3Node([]byte(v3Array(nil)))
	if err != nil || a.Shard != nil {
		t.Errorf("unsharded array: Shard %+v err %v, want nil", a.Shard, err)
	}
}

func TestMetadataErrorFormat(t *testing.T) {
	_, _, err := ParseV3Node([]byte(v3Array(map[string]string{"shape": `[10,10,10]`})))
	var me *MetadataError
	if !errors.As(err, &me) {
		t.Fatalf("error %v is not a *MetadataError", err)
	}
	if me.Document != "zarr.json" || me.Field != "chunk_grid.configuration.chunk_shape" {
		t.Errorf("Document %q Field %q", me.Document, me.Field)
	}
	const want = "zarr.json: chunk_grid.configuration.chunk_shape has 2 dimensions but shape has 3"
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}
