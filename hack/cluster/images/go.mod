// Tiny static programs packed into FROM-scratch images for the real test node (tests/cluster/images.py):
// pause, the pod sandbox image containerd's CRI needs (no registry is reachable), and testserver, an HTTP
// server for the real-node smoke tests. Standard library only.
module slm-operator.io/hack/cluster/images

go 1.22
