"""gRPC plumbing shared by the Check and audit services: listener addresses, the thread pool, and the one place
that maps our errors to gRPC status codes."""
