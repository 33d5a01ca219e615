"""Training recipe for MSCNN-SPU-ATT: data preparation, protocols, caching, reports and publishing."""
