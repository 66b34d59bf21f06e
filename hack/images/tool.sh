#!/usr/bin/env bash
# The builder (CONTAINER_TOOL: buildah, default, or podman) on the private store that hack/images/build.sh
# fills, for looking at or using the images by hand:
#   hack/images/tool.sh images
#   hack/images/tool.sh push slm-operator/operator:0.1.0 docker://registry.example.com/ml/operator:0.1.0
# shellcheck source=hack/images/lib.sh
source "$(dirname "$0")/lib.sh"
tool "$@"
