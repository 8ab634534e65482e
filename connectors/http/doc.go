// Package http is the "http" writer: it exports processed items to a REST
// remote, one request (or a short sequence of them) per item.
//
// The integration's transport says how to reach the remote: base_url,
// extra headers, auth_token_env (the name of the environment variable that
// holds a bearer token, sent as "Authorization: Bearer <token>"; the token
// never appears in logs or errors) and a per-request timeout (default 10s).
// The connector's "remote" section says where its entities live:
//
//	remote:
//	  collection: /customers        # where new entities are POSTed
//	  item: /customers/{id}         # one entity; {id} is filled from the item
//	  strategy: post_then_put       # or put
//	  update_method: PUT            # or PATCH
//	  delete_method: DELETE
//
// A placeholder is filled from the processed item's top-level fields, then
// from its identifier (item.Key) by column name, and path-escaped, so the key
// "A/B C" addresses /customers/A%2FB%20C. An item without the field is a
// permanent error.
//
// # Strategies
//
// put sends PUT to the item URL with the JSON body: for remotes where PUT
// creates or replaces.
//
// post_then_put (the default) sends the update (update_method to the item
// URL) first; on 404 it creates the entity with POST to the collection URL,
// and if that POST answers 409 (someone created it meanwhile) it sends the
// update again. Update first, because the writer then needs no local record
// of what the remote already has, and because repeating the export, as
// redelivery, retry and replay do, converges: a remote that has the entity
// just gets it replaced with the current state, one that lacks it gets it
// created. Creating first would make the common case (the entity exists)
// cost two requests and depend on the remote answering 409 for duplicates.
// The POST carries an Idempotency-Key header, "<message id>:<entity key>",
// for remotes that deduplicate creations. The other requests carry none:
// PUT and DELETE are idempotent by definition, PATCH here always carries the
// whole object, and a key shared with the POST would make such remotes
// replay the first answer (the 404) to the update that follows a 409.
//
// A deletion (item.Op delete) sends delete_method to the item URL, without
// a body for DELETE and with the mapped fields otherwise (a "soft delete");
// 404 and 410 count as success, since the entity is gone either way.
//
// # Errors
//
// Classification happens here, at the boundary: 2xx is success; 408, 429
// and 5xx are transient (a *jobs.TransientError whose RetryAfter comes from
// the Retry-After header, seconds or an HTTP date, capped at an hour);
// network errors, refused connections and timeouts are transient; every
// other status is permanent (jobs.Permanent). Status errors are a
// *StatusError naming the method, the URL path (never the query), the status
// and at most 512 bytes of the response body. Redirects are not followed by
// the default client: a 3xx is reported like any other unexpected status.
//
// Remotes echo requests in their error pages, credentials included, and a
// status error ends up in logs and dead-letter headers. So the quoted body
// is masked before it is cut to 512 bytes: every occurrence of the bearer
// token and of the values of configured headers that look secret
// (Authorization and Proxy-Authorization, whose scheme is kept, Cookie,
// whose cookie values are masked, names that are or end in "key", and
// names holding "token", "secret" or "password"), and every piece of 4
// bytes or more of one, wherever it appears: the start of a secret cut off
// where the writer stopped reading (it reads 512 bytes plus the longest
// secret's length, so a secret starting before the limit is masked whole)
// or one the remote shortened. Each masked run becomes "[REDACTED]", which
// is never cut in two.
//
// A batch is written item by item, in order; the first failure stops it and
// is returned wrapped with the entity key.
package http
