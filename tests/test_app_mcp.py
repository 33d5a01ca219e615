"""The app as an MCP server (`launch(mcp_server=True)`): the schema endpoint lists the analysis (and
the timeline) as tools with their parameters and descriptions, and a call through the MCP
protocol (streamable HTTP, the official `mcp` client) gives the same answer as gradio_client."""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import urllib.request

import pytest

from test_app import SPEECH_FILE, call, server  # noqa: F401 - the session's `python app.py`

PARAMETERS = ["audio", "transcript", "modality", "checkpoint_name", "read_all_words"]


def test_the_schema_lists_the_analysis_tool_with_its_parameters(server):  # noqa: F811
    with urllib.request.urlopen(server.url + "gradio_api/mcp/schema", timeout=30) as response:
        tools = json.load(response)
    by_name = {t["name"]: t for t in tools}
    assert set(by_name) == {"analyze", "run_timeline"}  # the private UI events (live stream, ...) are not tools
    timeline = by_name["run_timeline"]
    assert "over time" in timeline["description"] and list(timeline["inputSchema"]["properties"]) == [
        "audio", "modality", "checkpoint_name", "read_all_words"]
    assert all(len(p.get("description", "")) > 20 for p in timeline["inputSchema"]["properties"].values())
    tool = by_name["analyze"]
    assert "emotion" in tool["description"] and "angry, happy, sad or neutral" in tool["description"]
    properties = tool["inputSchema"]["properties"]
    assert list(properties) == PARAMETERS
    for name in PARAMETERS:
        assert len(properties[name].get("description", "")) > 20, name  # each parameter explained
    assert properties["audio"]["type"] == "string" and "URL" in properties["audio"]["description"]
    assert tool["meta"]["endpoint_name"] == "analyze" and tool["meta"]["file_data_present"]


def _mcp_call(url: str, arguments: dict):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        async with streamable_http_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                result = await session.call_tool("analyze", arguments)
                return listed, result

    return asyncio.run(run())


def test_one_call_through_mcp_answers_like_gradio_client(server):  # noqa: F811
    pytest.importorskip("mcp")
    from gradio_client import Client

    audio = "data:audio/wav;base64," + base64.b64encode(SPEECH_FILE.read_bytes()).decode()
    listed, result = _mcp_call(server.url + "gradio_api/mcp/",
                               {"audio": audio, "transcript": "", "modality": "both",
                                "checkpoint_name": server.checkpoint_name})
    assert {t.name for t in listed.tools} == {"analyze", "run_timeline"}
    assert not result.isError, result.content
    texts = [c.text for c in result.content if c.type == "text"]
    images = [c for c in result.content if c.type == "image"]
    assert images and all(i.mimeType.startswith("image/") and len(base64.b64decode(i.data)) > 1000 for i in images)
    details = ast.literal_eval(texts[-1])  # the last output: every number, as the API returns it

    expected = call(Client(server.url, verbose=False, analytics_enabled=False), SPEECH_FILE, "",
                    server=server)["details"]
    assert details["label"] == expected["label"]
    assert details["transcript"] == expected["transcript"] and "believe" in details["transcript"].lower()
    assert details["tokens"] == expected["tokens"] and details["transcript_source"] == "asr"
    for label, p in expected["probabilities"].items():
        assert details["probabilities"][label] == pytest.approx(p, abs=1e-6)
    assert details["word_influence"] == pytest.approx(expected["word_influence"], abs=1e-6)
