// Package mapping is the declarative "mapping" processor: it turns the row a
// reader loaded (item.Fields, by column) into the JSON object a remote
// expects, as described by the connector's "mapping" section.
//
//	mapping:
//	  fields:
//	    id:         {template: "{order_id}-{product_id}"}
//	    name:       {from: company_name}
//	    unit_price: {from: unit_price, format: decimal, scale: 2}
//	    shipped:    {from: shipped_at, format: timestamp, layout: date, omit_null: true}
//	    contact:    {object: {name: {from: contact_name}, phone: {from: phone, default: ""}}}
//	    source:     {const: northwind}
//
// Every output field has exactly one source:
//
//   - from: copies a column of the row;
//   - const: a fixed value (any YAML scalar, list or mapping);
//   - template: a string with {column} placeholders ("{{" and "}}" are
//     literal braces);
//   - object: a nested object whose fields are specs themselves.
//
// A from or template spec may also have:
//
//   - format: string, integer, decimal (optional scale: decimals to round to,
//     half away from zero), timestamp (optional layout: rfc3339 (default),
//     date, or a Go time layout) or boolean. Numbers are rendered as JSON
//     numbers from their exact decimal text, so a PostgreSQL real holding
//     9.80000019 becomes 9.8, and trailing zeros are dropped (9.80 is 9.8).
//     Timestamps are rendered in UTC. Without a format the value passes
//     through unchanged and encoding/json renders it.
//   - default: the value used when the source is null (or, on an upsert,
//     absent from the row). It is used as written, not formatted.
//   - omit_null: leave the field out when the value is null.
//
// The configuration is checked when the processor is built: one source per
// spec, known formats, scale and layout only with their format, templates
// with at least one placeholder, and, when the connector's entity lists its
// columns, every column named by from or a template is one of them or a key
// column. Errors name the key, for example
// key "mapping.fields.contact.name".
//
// At run time an upsert whose row lacks a column the mapping reads, or a
// value that cannot be converted (an integer field holding "abc"), fails
// with a permanent error naming the field: retrying cannot fix either. A
// deletion's item holds only the key columns, so fields whose sources are
// absent are left out silently and constants are still included; that is
// enough for a writer to build the entity's URL. The processor never
// filters items out, and it replaces only Fields: Key and Op pass unchanged.
package mapping
