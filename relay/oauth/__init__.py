"""OAuth connections: the provider catalog, the authorization flow's state and PKCE,
the token protocol, and the sealed token store. See docs/oauth.md."""
