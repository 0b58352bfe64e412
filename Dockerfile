# The image the Ray head, worker and job-submitter pods run (k8s/), and a laptop can run too.
# Each build gets its own tag (never push the same tag twice: nodes keep a cached image for a
# tag with imagePullPolicy IfNotPresent), and the base image is pinned by digest for a release:
#
#   TAG=0.1.0-ray2.60.0-$(git rev-parse --short=12 HEAD)
#   BASE=rayproject/ray:2.60.0-py311-cu128@sha256:<digest>   # docker buildx imagetools inspect rayproject/ray:2.60.0-py311-cu128
#   docker build --build-arg BASE_IMAGE=$BASE -t registry.example.com/medxfer:$TAG .
#   docker push registry.example.com/medxfer:$TAG
#
# The base is the official Ray image for the pinned Ray version, Python 3.11 and CUDA 12.8:
# the Ray on the pods must be exactly the `rayVersion` of the RayCluster/RayJob specs and the
# Ray that `ray job submit` talks to. Its `ray` user (uid 1000, group users/100) is the user
# the manifests run as. No credentials are baked in: S3 access comes from the pod's
# environment (a Secret) or its workload identity, the Ray token from a Secret.
#
# Every third-party package is pinned by constraints/image.txt (written from the tested
# environment by `make image-constraints`), and installed in layers before the code is
# copied, so a code change rebuilds only the last layer.
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311-cu128
FROM ${BASE_IMAGE}

ARG RAY_VERSION=2.60.0
# PyTorch wheels built for the base image's CUDA 12.8 (PyPI's default wheels target another CUDA).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

LABEL org.opencontainers.image.title="medxfer" \
      org.opencontainers.image.description="Transfer learning for medical image classifiers as Ray jobs on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.base.name="rayproject/ray:2.60.0-py311-cu128" \
      io.ray.version="2.60.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAY_TRAIN_V2_ENABLED=1

USER ray
WORKDIR /home/ray

# 1. PyTorch, the largest layer, at the versions the constraints pin (their CUDA libraries
#    come with the build for the base image's CUDA).
COPY --chown=ray:users constraints/image.txt /tmp/medxfer/constraints.txt
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
      $(grep -E '^(torch|torchvision)==' /tmp/medxfer/constraints.txt)

# 2. Every other third-party dependency: the list from pyproject.toml, the versions from the
#    constraints (Ray stays the base image's: the constraints pin the same version).
COPY --chown=ray:users pyproject.toml /tmp/medxfer/src/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/medxfer/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/medxfer/requirements.txt \
 && pip install --no-cache-dir -c /tmp/medxfer/constraints.txt -r /tmp/medxfer/requirements.txt setuptools \
 && python -c "import ray; assert ray.__version__ == '${RAY_VERSION}', ray.__version__"

# 3. medxfer itself: a code change rebuilds only this layer.
COPY --chown=ray:users README.md /tmp/medxfer/src/README.md
COPY --chown=ray:users medxfer /tmp/medxfer/src/medxfer
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/medxfer/src \
 && rm -rf /tmp/medxfer \
 && python -c "import ray, torch, cv2, medxfer" \
 && medxfer --version

USER ray
