# Container images: the operator and the model-server runtime (CPU, and CUDA by build argument).
# No engine is needed to read this file; building needs docker (or CONTAINER_TOOL=podman / nerdctl).
#   make images                                  operator + cpu runtime, tagged slm-operator/<name>:<version>
#   make images IMAGE_VARIANTS="cpu cuda"        also the CUDA runtime (tag suffix -cuda, as the operator expects)
#   make images IMAGE_REGISTRY=registry.example.com/ml images-push
#   make kind-load                               put the images on the nodes of a kind cluster (no registry)

CONTAINER_TOOL ?= docker
IMAGE_REGISTRY ?=
IMAGE_VARIANTS ?= cpu
IMAGE_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_PREFIX := $(if $(IMAGE_REGISTRY),$(patsubst %/,%,$(IMAGE_REGISTRY))/)slm-operator
OPERATOR_IMAGE ?= $(IMAGE_PREFIX)/operator:$(IMAGE_VERSION)
RUNTIME_IMAGE ?= $(IMAGE_PREFIX)/slm-runtime:$(IMAGE_VERSION)
KIND_CLUSTER ?= slm
HADOLINT ?= $(VENV)/bin/hadolint

# The runtime tag per variant: cpu is the plain tag, the others "<tag>-<variant>" (OperatorSettings.image_for).
runtime_tag = $(RUNTIME_IMAGE)$(if $(filter-out cpu,$(1)),-$(1))

RUNTIME_TARGETS := $(addprefix image-runtime-,cpu cuda)
.PHONY: images image-operator $(RUNTIME_TARGETS) images-push images-lint kind-load

images: image-operator $(addprefix image-runtime-,$(IMAGE_VARIANTS)) ## Build the operator and runtime images (IMAGE_VARIANTS="cpu cuda")

image-operator:
	$(CONTAINER_TOOL) build -f operator/Dockerfile -t $(OPERATOR_IMAGE) .

$(RUNTIME_TARGETS): image-runtime-%:
	$(CONTAINER_TOOL) build -f runtime/Dockerfile --build-arg VARIANT=$* -t $(call runtime_tag,$*) .

images-push: ## Push the images built by `make images` (set IMAGE_REGISTRY)
	$(CONTAINER_TOOL) push $(OPERATOR_IMAGE)
	$(foreach v,$(IMAGE_VARIANTS),$(CONTAINER_TOOL) push $(call runtime_tag,$(v)) &&) true

images-lint: ## hadolint both Dockerfiles (hack/install-test-tools.sh installs hadolint)
	$(HADOLINT) operator/Dockerfile runtime/Dockerfile

kind-load: ## Load the images into the kind cluster $(KIND_CLUSTER) (kind-config.yaml)
	kind load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(foreach v,$(IMAGE_VARIANTS),$(call runtime_tag,$(v)))
