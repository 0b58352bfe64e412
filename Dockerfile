# The image the Ray head, worker and job-submitter pods run (k8s/), and a laptop can run too.
#
#   docker build -t registry.example.com/medxfer:0.1.0-ray2.60.0 .
#   docker push registry.example.com/medxfer:0.1.0-ray2.60.0
#
# The base is the official Ray image for the pinned Ray version, Python 3.11 and CUDA 12.8:
# the Ray on the pods must be exactly the `rayVersion` of the RayCluster/RayJob specs and the
# Ray that `ray job submit` talks to. Its `ray` user (uid 1000, group users/100) is the user
# the manifests run as. No credentials are baked in: S3 access comes from the pod's
# environment (a Secret) or its workload identity, the Ray token from a Secret.
FROM rayproject/ray:2.60.0-py311-cu128

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

# Heavy, rarely changing dependencies first, so a code change rebuilds only the last layers.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch torchvision

COPY --chown=ray:users pyproject.toml README.md /tmp/medxfer-src/
COPY --chown=ray:users medxfer /tmp/medxfer-src/medxfer
# Ray stays at the base image's version; everything else resolves from pyproject.toml.
RUN pip install --no-cache-dir "ray[train,data,default]==${RAY_VERSION}" /tmp/medxfer-src \
 && rm -rf /tmp/medxfer-src \
 && python -c "import ray, torch, cv2, medxfer; assert ray.__version__ == '${RAY_VERSION}', ray.__version__" \
 && medxfer --version

USER ray
