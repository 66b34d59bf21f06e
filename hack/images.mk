# Container images: the operator and the model-server runtime, one runtime image per hardware-profile image
# variant. No engine is needed to read this file. docs/images.md has the details.
#   make images                                  operator + cpu runtime, tagged slm-operator/<name>:<version>
#   make images IMAGE_VARIANTS="cpu cuda"        also the CUDA runtime (tag suffix -cuda, as the operator expects)
#   make images CONTAINER_TOOL=buildah           daemonless, no registry needed: a local Debian base image, the
#                                                llama.cpp wheel compiled once, oci-archives under
#                                                $(SLM_CACHE_HOME)/images (hack/images/build.sh); podman too
#   make image-base CONTAINER_TOOL=buildah       only the local Debian base (hack/images/base.sh)
#   make images-import CONTAINERD_ADDRESS=...    build what is missing and import it into containerd (k8s.io)
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
CONTAINERD_ADDRESS ?= /run/containerd/containerd.sock

# The runtime tag per variant: cpu is the plain tag, the others "<tag>-<variant>" (OperatorSettings.image_for).
runtime_tag = $(RUNTIME_IMAGE)$(if $(filter-out cpu,$(1)),-$(1))

# Every variant runtime/Dockerfile builds (stages build-<variant> and final-<variant>); each hardware profile's
# imageVariant must be one of them (tests/unit/chart/test_dockerfiles.py). cpu, openvino and intel need only
# Debian and PyPI packages; cuda and rocm need their vendor's base image from a registry.
RUNTIME_VARIANTS := cpu openvino intel cuda rocm
RUNTIME_TARGETS := $(addprefix image-runtime-,$(RUNTIME_VARIANTS))
# buildah and podman go through hack/images/ (local base, cached wheels, input-keyed archives); docker builds
# directly with the public python image.
DAEMONLESS := $(filter buildah podman,$(notdir $(CONTAINER_TOOL)))
IMAGES_ENV = CONTAINER_TOOL=$(if $(DAEMONLESS),$(CONTAINER_TOOL),buildah) OPERATOR_IMAGE=$(OPERATOR_IMAGE) \
	RUNTIME_IMAGE=$(RUNTIME_IMAGE)
.PHONY: images image-base image-operator $(RUNTIME_TARGETS) images-push images-lint images-import kind-load

images: image-operator $(addprefix image-runtime-,$(IMAGE_VARIANTS)) ## Build the operator and runtime images (IMAGE_VARIANTS="cpu openvino intel cuda rocm"; CONTAINER_TOOL=buildah here)

ifneq ($(DAEMONLESS),)
image-base: ## The local Debian base image for buildah/podman (debootstrap; cached under $(SLM_CACHE_HOME)/images)
	$(IMAGES_ENV) hack/images/base.sh

image-operator:
	$(IMAGES_ENV) hack/images/build.sh operator

$(RUNTIME_TARGETS): image-runtime-%:
	$(IMAGES_ENV) hack/images/build.sh runtime-$*

images-push: ## Push the images built by `make images` (set IMAGE_REGISTRY)
	$(IMAGES_ENV) hack/images/tool.sh push $(OPERATOR_IMAGE) docker://$(OPERATOR_IMAGE)
	$(foreach v,$(IMAGE_VARIANTS),$(IMAGES_ENV) hack/images/tool.sh push $(call runtime_tag,$(v)) docker://$(call runtime_tag,$(v)) &&) true
else
image-base:
	@echo "image-base: only for CONTAINER_TOOL=buildah or podman ($(CONTAINER_TOOL) uses PYTHON_IMAGE from a registry)"

image-operator:
	$(CONTAINER_TOOL) build -f operator/Dockerfile -t $(OPERATOR_IMAGE) .

$(RUNTIME_TARGETS): image-runtime-%:
	$(CONTAINER_TOOL) build -f runtime/Dockerfile --build-arg VARIANT=$* -t $(call runtime_tag,$*) .

images-push: ## Push the images built by `make images` (set IMAGE_REGISTRY)
	$(CONTAINER_TOOL) push $(OPERATOR_IMAGE)
	$(foreach v,$(IMAGE_VARIANTS),$(CONTAINER_TOOL) push $(call runtime_tag,$(v)) &&) true
endif

images-import: ## Build what is missing (buildah) and import the images into containerd's k8s.io namespace
	$(IMAGES_ENV) hack/images/import-containerd.sh $(CONTAINERD_ADDRESS) operator $(addprefix runtime-,$(IMAGE_VARIANTS))

images-lint: ## hadolint both Dockerfiles (hack/install-test-tools.sh installs hadolint)
	$(HADOLINT) operator/Dockerfile runtime/Dockerfile

kind-load: ## Load the images into the kind cluster $(KIND_CLUSTER) (kind-config.yaml)
	kind load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(foreach v,$(IMAGE_VARIANTS),$(call runtime_tag,$(v)))
