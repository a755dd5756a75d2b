"""Clients that need a venv of their own (tests/client_venvs.py), each used as its own docs
show, against the real Gemma 3 270M over the app served by uvicorn (no Ray):

* langchain-llm-api, the client llm-api was built for: ``LLMAPI(params={"n_predict": ...,
  "temp": ...})`` on ``/generate`` and, streaming, ``/agenerate``; ``APIEmbeddings`` on
  ``/embeddings``. It sends no key and names no model: a public server's default model.
* instructor, on the OpenAI client: a Pydantic model with bounded fields, in its default
  (tool-calling) mode and in JSON-schema mode; the grammar keeps the answer valid.
"""

import json

import pytest
from client_venvs import client_python, run_client
from live_server import EngineClient, serving

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.engine.llama_engine import Engine
from poly_ray.tasks.runner import TaskRunner

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def base_url(gemma_path):
    cfg = config.validate({
        "public": True,
        "models": {"g": {"model_path": str(gemma_path), "context_size": 1024, "slots": 2, "embeddings": True}},
    }, env={})
    engine = Engine(gemma_path, context_size=1024, slots=2, threads=2, flush_interval=0, name="g")
    app = create_app(TaskRunner(cfg.tasks, cfg.models, {"g": EngineClient(engine)}), cfg)
    try:
        with serving(app) as url:
            yield url
    finally:
        engine.close()


LLM_API = """
import json, os
from langchain.callbacks.base import CallbackManager
from langchain.callbacks.streaming_stdout import StreamingStdOutCallbackHandler
from langchain_llm_api import APIEmbeddings, LLMAPI

class Tokens(StreamingStdOutCallbackHandler):  # the docs' handler, collecting instead of printing
    seen = []
    def on_llm_new_token(self, token, **kwargs):
        self.seen.append(token)

llm = LLMAPI(host_name=os.environ["BASE_URL"], params={"n_predict": 24, "temp": 0.2})
whole = llm("The lighthouse keeper climbed the stairs and")
streamed = LLMAPI(host_name=os.environ["BASE_URL"], params={"n_predict": 24, "temp": 0}, streaming=True,
                  verbose=True, callback_manager=CallbackManager([Tokens()]))("Once upon a time")
vector = APIEmbeddings(host_name=os.environ["BASE_URL"]).embed_query("the sea")
print(json.dumps({"whole": whole, "streamed": streamed, "tokens": Tokens.seen, "dimensions": len(vector)}))
"""


def test_langchain_llm_api_generates_streams_and_embeds(base_url):
    # It was written for the LangChain of its day (April 2023): later ones dropped callback_manager.
    python = client_python("langchain-llm-api", ["langchain-llm-api==0.0.1", "langchain==0.0.150"])
    out = json.loads(run_client(python, LLM_API, base_url))
    assert out["whole"].strip() and "error" not in out["whole"]
    assert out["streamed"].strip() and len(out["tokens"]) > 1 and "".join(out["tokens"]) == out["streamed"]
    assert out["dimensions"] == 640


INSTRUCTOR = """
import json, os
import instructor
from openai import OpenAI
from pydantic import BaseModel, Field

class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)
    height_m: float = Field(gt=0, lt=3)

out = {}
for mode in (instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA):
    client = instructor.from_openai(OpenAI(base_url=os.environ["BASE_URL"] + "/v1", api_key="any"), mode=mode)
    person = client.chat.completions.create(
        model="g", response_model=Person, temperature=0, max_tokens=80, max_retries=0,
        messages=[{"role": "user", "content": "Ada is 36 years old and 1.65 m tall."}])
    out[mode.value] = person.model_dump()
print(json.dumps(out))
"""


def test_instructor_extracts_a_model_with_bounded_fields_in_both_modes(base_url):
    python = client_python("instructor", ["instructor==1.17.0"])
    out = json.loads(run_client(python, INSTRUCTOR, base_url))
    assert set(out) == {"tool_call", "json_schema_mode"}, out
    for person in out.values():
        assert 0 <= person["age"] <= 120 and 0 < person["height_m"] < 3 and len(person["name"]) <= 20
