"""Render the Kubernetes objects that run a medxfer job config on KubeRay.

Why a renderer: the number of Ray Train workers and GPUs lives in the job config
(``scaling``), and the pods that host them live in a RayJob. Hand-editing both invites a
cluster with four GPU pods running a config that asks for one worker. ``medxfer k8s render``
derives the worker group from the config, and the manifests checked in under ``k8s/`` are
this package's output for the configs in ``jobs/`` (each file's first line names the command;
a test re-runs it), so the two cannot drift apart.

Everything a pod needs that is not in the image arrives by reference, never inline: the job
configs from the ``medxfer-jobs`` ConfigMap (rendered from ``jobs/`` by ``--kind configmap``),
the Ray token from the ``medxfer-ray-token`` Secret, S3 credentials from the optional
``medxfer-s3`` Secret or a workload identity on the ServiceAccounts.

One module per object (``rayjob``, ``raycluster``, ``raycronjob``, ``cronjob``, ``configmap``),
built from the shared parts: ``names`` (what objects call each other), ``sizing`` (pods from
``scaling``), ``pods`` (pod templates), ``stages`` (what each stage runs), ``schedule`` (the
tick); ``render`` picks the object for ``--kind`` and writes YAML. Where a choice depends on
what the KubeRay v1.7.0 operator does with an object, as read in its source
(ray-project/kuberay, tag v1.7.0, ray-operator/controllers/ray/), the module making it says so.
"""
