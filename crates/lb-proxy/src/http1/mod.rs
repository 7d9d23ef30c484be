//! lb's own HTTP/1.1 engine, the proxy's fast path.
//!
//! Heads are parsed with httparse into offsets on the connection's read
//! buffer (`request`, `response`), checked against RFC 9112's framing rules
//! and nginx's refusals, and written back out with the proxy's edits
//! (`write`). Bodies are copied between connections with their framing
//! checked and re-written (`body`, `chunked`). Nothing here allocates per
//! message once a connection's buffers exist, and nothing here knows about
//! routing, balancing or health: the front (`crate::front`) and the attempt
//! loop (`crate::forward`) put it to work.

pub(crate) mod body;
pub(crate) mod buffer;
pub(crate) mod chunked;
pub(crate) mod fields;
#[cfg(test)]
mod fuzz;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod write;
