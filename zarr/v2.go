package zarr

import (
	"bytes"
	"encoding/json"
)

// ParseZArray parses a zarr v2 .zarray document.
func ParseZArray(data []byte) (*Array, error) {
	return parseZArray(".zarray", data)
}

// ParseZGroup checks a zarr v2 .zgroup document.
func ParseZGroup(data []byte) error {
	return parseZGroup(".zgroup", data)
}

func parseZGroup(doc string, data []byte) error {
	m, err := decodeDocument(doc, data)
	if err != nil {
		return err
	}
	return checkV2Format(doc, m)
}

func checkV2Format(doc string, m map[string]json.RawMessage) error {
	format, err := requireInt(doc, m, "zarr_format")
	if err != nil {
		return err
	}
	if format != 2 {
		return unsupportedf(doc, "zarr_format", "is %d; zarr v2 documents have zarr_format 2", format)
	}
	return nil
}

func parseZArray(doc string, data []byte) (*Array, error) {
	m, err := decodeDocument(doc, data)
	if err != nil {
		return nil, err
	}
	if err := checkV2Format(doc, m); err != nil {
		return nil, err
	}
	a := &Array{ZarrFormat: 2, KeyEncoding: KeyEncoding{Separator: "."}}

	raw, ok := m["shape"]
	if !ok {
		return nil, invalidf(doc, "shape", "is missing")
	}
	if a.Shape, err = decodeDims(doc, "shape", raw); err != nil {
		return nil, err
	}
	raw, ok = m["chunks"]
	if !ok {
		return nil, invalidf(doc, "chunks", "is missing")
	}
	if a.ChunkShape, err = decodeDims(doc, "chunks", raw); err != nil {
		return nil, err
	}

	raw, ok = m["dtype"]
	if !ok {
		return nil, invalidf(doc, "dtype", "is missing")
	}
	if a.DataType, err = decodeV2DType(doc, raw); err != nil {
		return nil, err
	}

	if raw, ok := m["order"]; ok {
		order, isString := decodeString(raw)
		if !isString || (order != "C" && order != "F") {
			return nil, invalidf(doc, "order", "must be \"C\" or \"F\", got %s", abbreviate(raw))
		}
		a.Order = order
	}

	if raw, ok := m["dimension_separator"]; ok && !isJSONNull(raw) {
		sep, isString := decodeString(raw)
		if !isString || (sep != "." && sep != "/") {
			return nil, invalidf(doc, "dimension_separator", "must be \".\" or \"/\", got %s", abbreviate(raw))
		}
		a.KeyEncoding.Separator = sep
	} else {
		a.KeyEncoding.SeparatorUnset = true
	}

	if err := a.validate(doc, "shape", "chunks"); err != nil {
		return nil, err
	}
	return a, nil
}

// decodeV2DType returns a simple dtype as is and a structured dtype (a list of
// [name, type(, shape)] fields) as compact JSON.
func decodeV2DType(doc string, raw json.RawMessage) (string, error) {
	if s, ok := decodeString(raw); ok {
		if s == "" {
			return "", invalidf(doc, "dtype", "is empty")
		}
		return s, nil
	}
	if !isJSONArray(raw) {
		return "", invalidf(doc, "dtype", "must be a string or a list of structured fields, got %s", abbreviate(raw))
	}
	fields, err := decodeArray(doc, "dtype", raw)
	if err != nil {
		return "", err
	}
	if len(fields) == 0 {
		return "", invalidf(doc, "dtype", "is an empty structured dtype")
	}
	for i, f := range fields {
		if !isJSONArray(f) {
			return "", invalidf(doc, "dtype", "[%d] must be a [name, type] list, got %s", i, abbreviate(f))
		}
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return "", invalidf(doc, "dtype", "is not valid JSON: %v", err)
	}
	return b.String(), nil
}
