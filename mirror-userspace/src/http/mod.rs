//! HTTP/1.x request and response framing (I/O-free).
