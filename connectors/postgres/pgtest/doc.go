// Package pgtest is test support for integration tests that need a real
// PostgreSQL: where to find the server (URL), throw-away schemas
// (NewSchema) and the Northwind dataset loaded into one (LoadNorthwind).
//
// It is an ordinary package so that tests of other packages can use it;
// only tests should import it. It does not import the postgres connector,
// so that package's own tests can use it too.
package pgtest
