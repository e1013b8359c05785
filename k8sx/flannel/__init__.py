"""flannel: subnet leases, the swappable lease stores (etcd, Kubernetes, local file), the backends
(udp, vxlan, host-gw) and the node agent loop that ties them together."""
