//! TCP stream reassembly (I/O-free). See the module docs once implemented.
