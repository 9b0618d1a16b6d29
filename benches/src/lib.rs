//! Benchmark support for Compresh (the load generator and hot-path benches land here).
