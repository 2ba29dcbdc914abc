"""Local servers that speak a provider's protocol, which `relay dev` starts for each
provider without credentials (SANDBOX=auto) and the tests run against. The production
code is pointed at them through the `*_API_BASE` settings: one code path."""
