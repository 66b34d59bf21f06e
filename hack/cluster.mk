# Local Kubernetes control plane for tests and development (hack/cluster/, tests/cluster/).
# Binaries are built from Go modules into $(SLM_CACHE_HOME)/bin/<component>-<version>/ (versions in
# hack/cluster/versions.env); the running cluster keeps its state, logs and kubeconfig in $(CLUSTER_STATE_DIR).
# REAL_NODE=1 adds the real kubelet node (containerd + kubelet + kube-proxy; root; docs/real-node.md) and its
# autoscaling metrics pipeline (metrics-server, KEDA, Prometheus; METRICS_PIPELINE=0 leaves it out).

CLUSTER_STATE_DIR ?= .state/cluster/dev

.PHONY: cluster-bins cluster-up cluster-down cluster-status cluster-import-image

cluster-bins: ## Build etcd, the Kubernetes binaries, kwok, helm, metrics-server, KEDA, Prometheus (cached)
	hack/cluster/build-bins.sh

cluster-up: ## Start the local control plane and kwok nodes (REAL_NODE=1: the real node + metrics pipeline); prints the kubeconfig
	PY=$(PY) hack/cluster/up.sh --state-dir $(CLUSTER_STATE_DIR) $(if $(filter 1 yes true,$(REAL_NODE)),--real-node) \
		$(if $(filter 0 no false,$(METRICS_PIPELINE)),--no-metrics-pipeline)

cluster-import-image: ## Import OCI image archives into the real node's containerd (IMAGES="a.oci.tar ...")
	PYTHONPATH=tests $(PY) -m cluster import-image --state-dir $(CLUSTER_STATE_DIR) $(IMAGES)

cluster-down: ## Stop the local control plane and its real node (add CLUSTER_PURGE=1 to delete its state too)
	PY=$(PY) hack/cluster/down.sh --state-dir $(CLUSTER_STATE_DIR) $(if $(CLUSTER_PURGE),--purge)

cluster-status: ## Show whether the local control plane is running
	PYTHONPATH=tests $(PY) -m cluster status --state-dir $(CLUSTER_STATE_DIR)

