"""The simple APIs with the bodies their original servers document (the Rust llm
server's /stream, llm-api's /generate and /agenerate), over the ASGI app with a
scripted model."""

import os

import pytest
from test_ollama_simple import http_client, make_app

# The Rust llm server's documented /stream body, cache id as a positive integer.
RUST_STREAM_BODY = {
    "prompt": "Once upon a time",
    "n_batch": 8,
    "top_k": 40,
    "top_p": 0.95,
    "repeat_penalty": 1.3,
    "temp": 0.8,
    "num_predict": 128,
    "cache": 42,
}


async def test_stream_takes_the_documented_body_with_an_integer_cache_id(tmp_path):
    app, model = make_app(tasks={"echo": {"model": "m", "max_tokens": 256}}, state_dir=str(tmp_path))
    async with http_client(app) as http:
        r = await http.post("/stream", json=RUST_STREAM_BODY)
        assert r.status_code == 200, r.text
        # The prompt's line first, then the generated text (the scripted model says the prompt's words).
        assert r.text == "Once upon a time\nOnce\nupon\na\ntime\n"
        sent = model.requests[-1]
        assert sent.max_tokens == 128 and sent.sampling.top_k == 40 and sent.sampling.temperature == 0.8
        assert sent.cache_key == "stream/m/anonymous/42"
        saved = r.headers["X-Poly-Prompt-File"]
        assert saved.startswith(str(tmp_path)) and open(saved).read() == "Once upon a time"
        assert (await http.post("/stream", json={"prompt": "a", "cache": "story-1"})).status_code == 200


async def test_stream_completes_the_raw_prompt_on_the_model_not_the_task():
    # The config: the only task has a long prelude and max_tokens 8.
    task = {"model": "m", "prelude": "You are a pirate. " * 50, "prefix": "Q: ", "max_tokens": 8}
    app, model = make_app(tasks={"pirate": task})
    async with http_client(app) as http:
        r = await http.post("/stream", json={"num_predict": 64, "prompt": "Once upon a time", "cache": 0})
        assert r.status_code == 200, r.text
        sent = model.requests[-1]
        assert sent.text == "Once upon a time" and sent.max_tokens == 64
        assert sent.cache_key is None and "X-Poly-Prompt-File" not in r.headers  # 0: no caching
        r = await http.post("/stream", json={"num_predict": 513, "prompt": "a"})
        assert r.status_code == 400 and "num_predict" in r.json()["error"]["message"]
    app, model = make_app(tasks={"pirate": task}, stream_task="pirate")  # opting into the task
    async with http_client(app) as http:
        assert (await http.post("/stream", json={"num_predict": 64, "prompt": "a"})).status_code == 400
        assert (await http.post("/stream", json={"prompt": "a"})).status_code == 200
        assert model.requests[-1].text.startswith("You are a pirate.") and model.requests[-1].max_tokens == 8


async def test_stream_cache_ids_belong_to_the_credential():
    app, model = make_app(public=False, allowed_keys=["key-a", "key-b"], tasks={"echo": {"model": "m"}})
    keys, files = [], []
    async with http_client(app) as http:
        for key in ("key-a", "key-b", "key-a"):
            r = await http.post("/stream", json={"prompt": "a", "cache": 42}, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
            keys.append(model.requests[-1].cache_key)
            files.append(r.headers["X-Poly-Prompt-File"])
    assert keys[0] == keys[2] != keys[1] and all(k.endswith("/42") for k in keys)
    assert files[0] == files[2] != files[1]


@pytest.mark.parametrize("cache", [-1, 1.5, True, "", "x" * 257, [1]])
async def test_stream_refuses_a_cache_id_that_is_neither_a_count_nor_a_name(cache):
    app, _ = make_app()
    async with http_client(app) as http:
        r = await http.post("/stream", json={"prompt": "a", "cache": cache})
        assert r.status_code == 400 and "cache" in r.json()["error"]["message"]


async def test_stream_predicts_32_tokens_by_default_within_the_limit():
    app, model = make_app(tasks={"short": {"model": "m", "max_tokens": 10}})
    async with http_client(app) as http:
        await http.post("/stream", json={"prompt": "a"})
        assert model.requests[-1].max_tokens == 32  # the model's context is the limit, not the task's
    app, model = make_app(tasks={"short": {"model": "m", "max_tokens": 10}}, stream_task="short")
    async with http_client(app) as http:
        await http.post("/stream", json={"prompt": "a"})
        assert model.requests[-1].max_tokens == 10


def test_stream_task_must_name_a_task():
    from poly_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="^stream_task: 'm' is not a task"):
        make_app(stream_task="m")


# llm-api's README, verbatim: the llama.cpp example (its `null or string` /
# `null or integer` placeholders as null, its `False` as JSON false), the Hugging
# Face example and the GPTQ-for-LLaMa example.
LLAMA_PARAMS = {
    "suffix": None,
    "max_tokens": 128,
    "temperature": 0.8,
    "top_p": 0.95,
    "logprobs": None,
    "echo": False,
    "stop": ["\\Q"],
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "repeat_penalty": 1.1,
    "top_k": 40,
}
HF_PARAMS = {"max_length": 25, "max_new_tokens": 25, "do_sample": True, "top_k": 40, "top_p": 0.95}
GPTQ_PARAMS = {"temp": 0.8, "top_p": 0.95, "min_length": 10, "max_length": 50}


def llm_api_app():
    return make_app(tasks={"echo": {"model": "m", "max_tokens": 256}})


@pytest.mark.parametrize("path", ["/generate", "/agenerate"])
@pytest.mark.parametrize("params", [LLAMA_PARAMS, HF_PARAMS, GPTQ_PARAMS], ids=["llama.cpp", "huggingface", "gptq"])
async def test_llm_api_documented_params_are_accepted(path, params):
    app, model = llm_api_app()
    async with http_client(app) as http:
        r = await http.post(path, json={"prompt": "What is the capital of paris", "params": params})
        assert r.status_code == 200, r.text


async def test_llm_api_params_map_onto_the_request():
    app, model = llm_api_app()
    async with http_client(app) as http:
        await http.post("/generate", json={"prompt": "a", "params": LLAMA_PARAMS})
        sent = model.requests[-1]
        assert sent.max_tokens == 128 and sent.stop == ("\\Q",) and sent.sampling.repeat_penalty == 1.1
        await http.post("/generate", json={"prompt": "a", "params": HF_PARAMS})
        sent = model.requests[-1]  # max_new_tokens wins over max_length, as in transformers
        assert sent.max_tokens == 25 and sent.max_length is None and sent.sampling.top_k == 40
        await http.post("/generate", json={"prompt": "a", "params": GPTQ_PARAMS})
        sent = model.requests[-1]  # lengths count the prompt: the engine turns them into new tokens
        assert (sent.min_length, sent.max_length, sent.sampling.temperature) == (10, 50, 0.8)
        await http.post("/generate", json={"prompt": "a", "params": {"do_sample": False, "temperature": 0.9,
                                                                     "repetition_penalty": 1.3, "min_new_tokens": 4}})
        sent = model.requests[-1]
        assert (sent.sampling.temperature, sent.sampling.repeat_penalty, sent.min_tokens) == (0.0, 1.3, 4)


async def test_langchain_llm_api_bodies_run_the_default_task():
    """langchain-llm-api's LLMAPI, as its docs show it (params={"n_predict": 300, "temp": 0.2}): no model in
    the body, its stop list always sent, no credential (a public server)."""
    app, model = make_app(default_task="short",
                          tasks={"echo": {"model": "m", "max_tokens": 256},
                                 "short": {"model": "m", "max_tokens": 300, "prefix": "> "}})
    async with http_client(app) as http:
        for path in ("/generate", "/agenerate"):
            body = {"prompt": "What is the capital of France?", "params": {"n_predict": 300, "temp": 0.2, "stop": []}}
            r = await http.post(path, json=body, headers={"Accept": "text/event-stream"})
            assert r.status_code == 200, r.text
            sent = model.requests[-1]
            assert (sent.max_tokens, sent.sampling.temperature, sent.stop) == (300, 0.2, ())
            assert sent.text.startswith("> What")  # the default task's prefix
        await http.post("/generate", json={"prompt": "a", "params": {
            "n_predict": -1, "top_k": 20, "top_p": 0.5, "repeat_penalty": 1.2, "repeat_last_n": 16, "stop": ["\n"]}})
        sent = model.requests[-1]
        assert (sent.max_tokens, sent.sampling.top_k, sent.sampling.top_p, sent.sampling.repeat_penalty,
                sent.sampling.repeat_last_n, sent.stop) == (300, 20, 0.5, 1.2, 16, ("\n",))
        r = await http.post("/generate", json={"prompt": "a", "params": {"n_predict": 301}})
        assert r.status_code == 400 and "above the limit of task 'short'" in r.json()["error"]["message"]
        r = await http.post("/generate", json={"prompt": "a", "params": {"n_predict": 0}})
        assert r.status_code == 400 and "params.n_predict: at least 1 token, or -1" in r.json()["error"]["message"]


async def test_llm_api_echo_and_suffix():
    app, _ = llm_api_app()
    async with http_client(app) as http:
        r = await http.post("/generate", json={"prompt": "one two", "params": {"echo": True, "suffix": "END"}})
        assert r.json() == "one two" + "one\ntwo\n" + "END"
        r = await http.post("/agenerate", json={"prompt": "x", "params": {"echo": True, "suffix": "!"}})
        assert r.text == "data: x\n\ndata: x\ndata: \n\ndata: !\n\n"


@pytest.mark.parametrize(("params", "message"), [
    ({"num_beams": 4}, "params.num_beams: beam search is not supported: leave it out, or use do_sample = false"),
    ({"early_stopping": True}, "params.early_stopping: beam search is not supported"),
    ({"num_return_sequences": 3}, "params.num_return_sequences: one answer per request"),
    ({"logprobs": 5}, "params.logprobs: /generate answers only the text: use /v1/completions with logprobs"),
    ({"typical_p": 0.9}, "params: 'typical_p' is not supported: locally typical sampling is not available; use min_p"),
    ({"no_repeat_ngram_size": 3}, "params: 'no_repeat_ngram_size' is not supported: use repetition_penalty"),
    ({"max_tokenz": 1}, "params: unknown parameter 'max_tokenz' (the nearest supported is 'max_tokens')"),
    ({"temprature": 1}, "params: unknown parameter 'temprature' (the nearest supported is 'temperature')"),
    ({"zzz": 1}, "params: unknown parameter 'zzz'"),
])
async def test_llm_api_params_without_a_meaning_here_are_refused_naming_what_to_use(params, message):
    app, model = llm_api_app()
    async with http_client(app) as http:
        r = await http.post("/generate", json={"prompt": "a", "params": params})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith(message), r.json()
        assert not model.requests


async def test_stream_sends_the_raw_prompt_even_where_a_task_has_the_models_name():
    app, model = make_app(tasks={"m": {"model": "m", "prelude": "PRELUDE ", "prefix": "> ", "max_tokens": 8}})
    async with http_client(app) as http:
        r = await http.post("/stream", json={"prompt": "a b", "num_predict": 5})
        assert r.status_code == 200, r.text
        assert model.requests[-1].text == "a b"  # neither the task's prelude nor its prefix


async def test_saved_prompts_are_kept_within_a_budget_per_credential(tmp_path, monkeypatch):
    from poly_ray.api.simple import stream

    monkeypatch.setattr(stream, "PROMPTS_PER_OWNER", 2)
    app, _ = make_app(state_dir=str(tmp_path))
    saved = []
    async with http_client(app) as http:
        for cache in (1, 2, 3):
            r = await http.post("/stream", json={"prompt": f"prompt {cache}", "cache": cache})
            saved.append(r.headers["X-Poly-Prompt-File"])
            os.utime(saved[-1], (cache, cache))  # whole seconds apart, as the files' times order them
    left = sorted(p.name for p in (tmp_path / "prompts").rglob("*.txt"))
    assert left == ["2.txt", "3.txt"]
