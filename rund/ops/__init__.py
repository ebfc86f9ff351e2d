"""Operating rund on a node: what runs (`rund ps`), Prometheus metrics (`rund metrics serve`), and the Kubernetes
side of `rund check`. Everything here reads what shims leave on disk and in /proc; nothing talks to a shim."""
