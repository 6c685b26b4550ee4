# The dashboard as a container: Hugging Face Spaces (Docker SDK, port 7860) or any host.
#   docker build -t medmodels-dashboard .
#   docker run --rm -p 7860:7860 medmodels-dashboard      # then open http://localhost:7860
# Weights: the weights/ folder copied into the image, else the Hub repository named in
# hub.toml (override with -e MEDMODELS_HUB_REPO=org/name -e MEDMODELS_HUB_REVISION=<commit>).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    MPLCONFIGDIR=/home/user/.cache/matplotlib \
    OMP_NUM_THREADS=1

# Spaces run the container as uid 1000; so do we, everywhere.
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

# Dependencies first (cached layer): torch's CPU build, then the pinned requirements
# (torch==X in requirements.txt is satisfied by X+cpu).
COPY --chown=user:user requirements.txt ./
RUN TORCH=$(grep -E '^torch==' requirements.txt | cut -d= -f3) \
    && VISION=$(grep -E '^torchvision==' requirements.txt | cut -d= -f3) \
    && pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH}" "torchvision==${VISION}" \
    && pip install -r requirements.txt

COPY --chown=user:user . .
USER user

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/_stcore/health', timeout=4)"
# Spaces show the app in an iframe on another site, where Chrome drops Streamlit's XSRF cookie
# and uploads fail with 403 (huggingface.co/docs/hub/spaces-cookie-limitations): XSRF is
# turned off here, for the container only; .streamlit/config.toml keeps it on elsewhere.
CMD ["python", "-m", "streamlit", "run", "dashboard/app.py", \
     "--server.port=7860", "--server.address=0.0.0.0", "--server.headless=true", \
     "--server.enableXsrfProtection=false"]
