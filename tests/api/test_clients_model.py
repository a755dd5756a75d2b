"""Popular clients, each used as its own docs show, against the real Gemma 3 270M over the
ASGI app (no Ray; tests/api/test_anthropic_model.py does the same for the anthropic package):
LangChain's ChatOpenAI (bind_tools, streamed and whole; with_structured_output with
method="json_schema" on a model with bounded fields) and the OpenAI Agents SDK (an agent with a
function tool over the Responses API, and one with an output_type, streamed). Greedy where an answer is checked, so nothing flakes."""

import httpx2
import jsonschema
import pytest
from pydantic import BaseModel, Field

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.state.service import StateService
from poly_ray.state.store import Store
from poly_ray.tasks.runner import TaskRunner

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def app(gemma_path, tmp_path_factory):
    from poly_ray.serve.model import LlamaModel

    cfg = config.validate({
        "allowed_keys": ["key-1"],
        "models": {"g": {"model_path": str(gemma_path), "context_size": 2048, "slots": 1, "threads_per_session": 2}},
    }, env={})
    model = LlamaModel("g", cfg.models["g"].model_dump(mode="json"), str(cfg.cache_path))
    runner = TaskRunner(cfg.tasks, cfg.models, {"g": model})
    runner.state = StateService(Store(tmp_path_factory.mktemp("state") / "state.sqlite3"))  # the Responses API's
    yield create_app(runner, cfg)
    runner.state.close()
    model.engine.close()


def http(app) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost/v1", timeout=600)


def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny, 21 C in {city}"


class Person(BaseModel):
    """Bounded fields as Pydantic writes them (minimum, exclusiveMinimum): enforced by the grammar."""

    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)
    height_m: float = Field(gt=0, lt=3)


def chat_model(app, **kwargs):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="g", base_url="http://localhost/v1", api_key="key-1", http_async_client=http(app),
                      max_retries=0, temperature=0, **kwargs)


async def test_langchain_bind_tools_whole_and_streamed(app):
    # A named function is called once (LangChain's own default leaves parallel_tool_calls out).
    llm = chat_model(app, max_tokens=64).bind_tools([get_weather], tool_choice="get_weather")
    ask = "What is the weather in Paris?"
    message = await llm.ainvoke(ask)
    [call] = message.tool_calls
    assert call["name"] == "get_weather" and call["id"] and isinstance(call["args"]["city"], str)
    # LangChain adds the chunks up: the name and id come in the call's first delta only, so
    # they read once (they were repeated in every delta: get_weatherget_weather...).
    whole = None
    async for chunk in llm.astream(ask):
        whole = chunk if whole is None else whole + chunk
    [streamed] = whole.tool_calls
    assert (streamed["name"], streamed["args"]) == ("get_weather", call["args"])


async def test_langchain_structured_output_with_json_schema(app):
    llm = chat_model(app, max_tokens=96).with_structured_output(Person, method="json_schema")
    person = await llm.ainvoke("Describe a person as JSON.")
    assert isinstance(person, Person)  # parsed by Pydantic: its bounds hold
    jsonschema.validate(person.model_dump(), Person.model_json_schema())


async def test_openai_agents_sdk_agent_with_a_function_tool(app):
    import openai
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # traces would go to OpenAI
    called = []

    @function_tool
    def weather(city: str) -> str:
        """The current weather in a city."""
        called.append(city)
        return get_weather(city)

    client = openai.AsyncOpenAI(api_key="key-1", base_url="http://localhost/v1", http_client=http(app), max_retries=0)
    agent = Agent(name="forecaster", instructions="Answer with the weather tool.", tools=[weather],
                  model=OpenAIResponsesModel(model="g", openai_client=client),
                  model_settings=ModelSettings(tool_choice="weather", temperature=0, max_tokens=64, truncation="auto",
                                               parallel_tool_calls=False, store=True, metadata={"test": "agents"},
                                               reasoning={"effort": "low"}, prompt_cache_retention="24h"),
                  tool_use_behavior="stop_on_first_tool")
    result = await Runner.run(agent, "What is the weather in Paris?", max_turns=2)
    assert called and result.final_output == get_weather(called[0])
    [response] = result.raw_responses
    assert response.usage.input_tokens > 0 and response.response_id.startswith("resp_")


async def test_openai_agents_sdk_structured_output_streamed(app):
    """An agent's output_type becomes the Responses API's text.format json_schema (a grammar),
    read back from the streamed events."""
    import openai
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    client = openai.AsyncOpenAI(api_key="key-1", base_url="http://localhost/v1", http_client=http(app), max_retries=0)
    agent = Agent(name="inventor", instructions="Invent a person.", output_type=Person,
                  model=OpenAIResponsesModel(model="g", openai_client=client),
                  model_settings=ModelSettings(temperature=0, max_tokens=96))
    run = Runner.run_streamed(agent, "Invent a person.")
    kinds = {event.type async for event in run.stream_events()}
    assert isinstance(run.final_output, Person) and "raw_response_event" in kinds
