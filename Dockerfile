# One image for every part of crossmodal: the three executors, the indexer's merger and the
# gateway (CrossmodalGateway: token checks, web page, request guards), with the Jina version
# pinned in requirements.txt. `python app.py -t export` writes Docker Compose / Kubernetes
# files whose services all run this image as `jina executor --uses <config> ...` or
# `jina gateway --uses crossmodal/serve/gateway.yml ...` (see README, "Several machines").
#
#   docker build -t crossmodal:latest .

# -- build stage: compilers for packages without a wheel (hdbscan), kept out of the final image
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
# CPU-only torch/torchvision at the versions requirements.txt pins (PyPI's default build carries CUDA)
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        $(grep -E '^(torch|torchvision)==' /tmp/requirements.txt) \
    && pip install -r /tmp/requirements.txt

# -- final stage
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 crossmodal && useradd --uid 1000 --gid 1000 --create-home crossmodal \
    && mkdir -p /data/workspace && chown -R crossmodal:crossmodal /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/crossmodal
COPY requirements.txt pyproject.toml app.py ./
COPY crossmodal/ crossmodal/
COPY executors/ executors/
COPY flows/ flows/
COPY ui/ ui/
# the demo model (models/demo-clip.*) and the demo data: the service works without downloads
COPY models/ models/
COPY data/demo/ data/demo/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/crossmodal \
    PYTHONUNBUFFERED=1 \
    JINA_OPTOUT_TELEMETRY=1 \
    JINA_HIDE_SURVEY=1 \
    CROSSMODAL_WORKSPACE=/data/workspace
# fail the build, not the first start, if the stack does not import
RUN python -c "import jina, open_clip, faiss, hdbscan, crossmodal.serve.export" \
    && jina --version
USER crossmodal
VOLUME ["/data/workspace"]
# executors (8080/8081 in Kubernetes/Compose), the gateway's gRPC and HTTP ports, metrics
EXPOSE 8080 8081 45678 45679 9090
ENTRYPOINT ["jina"]
CMD ["--help"]
