"""What a user writes instead of `rivulet serve`: a FastAPI endpoint making the seed's call.

    uvicorn bench.handwritten_server:app --port 8081

One openai client for the process (its own retries off, as Rivulet's job has them), a sync
endpoint (FastAPI runs it on its thread pool), the features in Tecton's response shape.
"""

from fastapi import FastAPI
from openai import OpenAI

app = FastAPI()
client = OpenAI(api_key="bench", max_retries=0)  # base URL from OPENAI_BASE_URL


@app.post("/api/v1/feature-service/get-features")
def get_features(body: dict) -> dict:
    text = body["params"]["requestContextMap"]["input"]
    response = client.embeddings.create(input=text, model="text-embedding-3-small")
    return {"result": {"features": [response.data[0].embedding]}}


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}
