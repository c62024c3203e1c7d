"""The write side and its storage: the LMDB layout, the single writer thread (group commit, hash chain, tree,
checkpoints), crash-safe files outside LMDB, offline verification, and opening a data directory for serving."""
