# The dashboard as a container: Hugging Face Spaces (Docker SDK, port 7860) or any host.
#   docker build -t medmodels-dashboard .
#   docker run --rm -p 7860:7860 medmodels-dashboard      # then open http://localhost:7860
# Weights: the weights/ folder copied into the image (on a Space it arrives through git-lfs,
# see docs/DEPLOY.md). Without it, the Hub repository in hub.toml at a pinned commit:
#   -e MEDMODELS_HUB_REPO=org/name -e MEDMODELS_HUB_REVISION=<commit> [-e HF_TOKEN=...]
FROM python:3.11-slim

# Spaces run the container as uid 1000; so do we, everywhere. USER comes before WORKDIR so
# that the app folder is created owned by that user.
RUN useradd --create-home --uid 1000 user
USER user
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    MPLCONFIGDIR=/home/user/.cache/matplotlib \
    OMP_NUM_THREADS=1
WORKDIR /home/user/app

# Dependencies first (cached layer): torch's CPU build, then the pinned requirements
# (torch==X in requirements.txt is satisfied by X+cpu). Installed for `user` (~/.local).
COPY --chown=user:user requirements.txt ./
RUN TORCH=$(grep -E '^torch==' requirements.txt | cut -d= -f3) \
    && VISION=$(grep -E '^torchvision==' requirements.txt | cut -d= -f3) \
    && pip install --user --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH}" "torchvision==${VISION}" \
    && pip install --user -r requirements.txt

# Weights in their own layer, before the code: a code change does not re-copy ~400 MB.
COPY --chown=user:user weights/ weights/
# The code and what the pages read (listed, so that weights/ is not copied a second time).
COPY --chown=user:user pyproject.toml hub.toml README.md LICENSE LICENSES.md REPRODUCTION.md ./
COPY --chown=user:user .streamlit/ .streamlit/
COPY --chown=user:user examples/ examples/
COPY --chown=user:user recipes/ recipes/
COPY --chown=user:user medmodels/ medmodels/
COPY --chown=user:user dashboard/ dashboard/

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/_stcore/health', timeout=4)"
# Spaces show the app in an iframe on another site, where Chrome drops Streamlit's XSRF cookie
# and uploads fail with 403 (huggingface.co/docs/hub/spaces-cookie-limitations): XSRF is
# turned off here, for the container only; .streamlit/config.toml keeps it on elsewhere.
CMD ["python", "-m", "streamlit", "run", "dashboard/app.py", \
     "--server.port=7860", "--server.address=0.0.0.0", "--server.headless=true", \
     "--server.enableXsrfProtection=false"]
