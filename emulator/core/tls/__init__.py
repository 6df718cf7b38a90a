"""The client leg's TLS decisions, sans I/O: the SSL policy, chain building and verification,
certificate facts and names, OCSP answers and JA4 fingerprints."""
