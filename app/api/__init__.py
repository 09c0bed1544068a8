"""HTTP routers: thin handlers over the domain services."""
