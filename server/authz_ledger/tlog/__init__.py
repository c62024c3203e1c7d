"""Transparency-log formats, pure: RFC 6962 Merkle trees and proofs, C2SP signed notes, tlog-checkpoint,
tlog-cosignature, tlog-proof and tlog-tiles paths. No I/O, no storage, no gRPC; imports nothing of ours but
:mod:`authz_ledger.errors`.
"""
