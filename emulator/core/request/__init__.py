"""One request's way through the gateway, sans I/O: which rule and pool (routing), what the
rewrite sets, the server variables it reads, which backend (balancing), and the plan that ties
them together."""
