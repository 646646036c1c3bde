#!/bin/sh
# Ollama for teambot: start the server, make sure the chat model is there, then keep serving.
# On first start the model is pulled from the Ollama library (kept in the volume afterwards);
# a Modelfile mounted at /models/<model>.Modelfile is created from instead (a model built
# elsewhere, e.g. the development model or a fine-tune). The health check waits for the
# marker file, so the bot starts only once the model can answer.
set -eu

MODEL="${TEAMBOT_MODEL:-llama2:7b-chat}"
READY=/tmp/teambot-model-ready
rm -f "$READY"

ollama serve &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM INT

tries=0
until ollama list >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 120 ]; then
        echo "ollama did not start within 120s" >&2
        exit 1
    fi
    sleep 1
done

if ! ollama show "$MODEL" >/dev/null 2>&1; then
    if [ -f "/models/$MODEL.Modelfile" ]; then
        echo "creating $MODEL from /models/$MODEL.Modelfile"
        ollama create "$MODEL" -f "/models/$MODEL.Modelfile"
    else
        echo "pulling $MODEL (first start only)"
        ollama pull "$MODEL"
    fi
fi
touch "$READY"
echo "model $MODEL ready"

wait "$server"
