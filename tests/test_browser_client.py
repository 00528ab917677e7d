"""The browser client end to end in real headless Chromium against a server with the real offline models.

Chromium's fake microphone plays a spoken query (synthesised by the server's own TTS) into the page's AudioWorklet;
the page streams 16 kHz PCM16 frames over the websocket, and the tests read what a shopper sees. Screenshots land in
``artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.replies.grounding import format_price, spoken_name
from server.app import create_app
from server.client import write_wav
from server.engines import App, build_app_state
from server.settings import Settings
from speech.audio import float32_to_pcm16
from tests.browser import PageErrors, chromium, require_browser, screenshot
from tests.conftest import LiveServer

pytestmark = [pytest.mark.real_model, pytest.mark.browser]

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}
QUERY = "Show me black hoodies under fifty dollars."


@pytest.fixture(scope="module", autouse=True)
def _browser_present() -> None:
    require_browser()


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> App:
    return build_app_state(Settings(data_dir=tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def server(state: App) -> Iterator[LiveServer]:
    with LiveServer(create_app(state=state)) as live:
        yield live


@pytest.fixture(scope="module")
def spoken_wav(state: App, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The query as a WAV for the fake microphone: 1 s of silence, the words, 3 s of silence."""
    assert state.tts is not None
    rate = state.tts.sample_rate
    speech = state.tts.synthesize(QUERY)
    audio = np.concatenate([np.zeros(rate, np.float32), speech, np.zeros(3 * rate, np.float32)])
    path = tmp_path_factory.mktemp("mic") / "query.wav"
    write_wav(path, float32_to_pcm16(audio), rate)
    return path


def open_page(browser: Any, url: str, viewport: dict[str, int] = PHONE, **context: Any) -> tuple[Any, PageErrors]:
    page = browser.new_context(viewport=viewport, **context).new_page()
    errors = PageErrors()
    errors.attach(page)
    page.goto(url)
    page.wait_for_function("() => window.shoptalk && window.shoptalk.state.connected", timeout=15000)
    return page, errors


def page_state(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("() => window.shoptalk.state"))


def cards(page: Any) -> list[dict[str, Any]]:
    return list(page.eval_on_selector_all(".bubble.assistant:last-of-type .card", """cards => cards.map(c => ({
        id: c.dataset.productId, price: Number(c.dataset.price), title: c.querySelector('h3').textContent,
        priceText: c.querySelector('.price').textContent, why: c.querySelector('.why')?.textContent || '',
        nearMiss: c.dataset.nearMiss ? c.dataset.nearMiss.split(' ') : [],
        nearNote: c.querySelector('.near-miss')?.textContent || '',
        image: c.querySelector('img').getAttribute('src')}))"""))


def assert_catalog_cards(found: list[dict[str, Any]], state: App, *, max_price: float | None = None) -> None:
    assert found
    for card in found:
        product = state.catalog.get(card["id"])
        assert product is not None, card  # only catalog products, never invented ones
        assert card["price"] == product.price
        assert card["image"] == f"/v1/products/{product.id}/image"
        if max_price is not None and product.price > max_price:  # only a close alternative, marked as such
            assert "price" in card["nearMiss"] and card["nearNote"].startswith("Close match: not the"), card
    fits = [card for card in found if not card["nearMiss"]]
    assert found[: len(fits)] == fits  # every product that fits the request comes first


def wait_for_reply(page: Any, timeout_ms: int = 60000) -> str:
    """The text of the newest finished assistant reply."""
    page.wait_for_function("""() => { const b = [...document.querySelectorAll('.bubble.assistant')].pop();
        return b && b.dataset.status; }""", timeout=timeout_ms)
    return str(page.eval_on_selector(".bubble.assistant:last-of-type .text", "e => e.textContent"))


def test_spoken_query_hands_free(server: LiveServer, spoken_wav: Path, state: App) -> None:
    with chromium(fake_mic=spoken_wav) as browser:
        page, errors = open_page(browser, server.http_url)
        page.get_by_role("button", name="Start listening").click()
        assert page.get_by_role("button", name="Stop listening").get_attribute("aria-pressed") == "true"
        final = page.locator(".bubble.user[data-kind=transcript] .text")
        final.wait_for(timeout=60000)
        transcript = final.text_content() or ""
        assert "hoodie" in transcript.lower() and ("50" in transcript or "fifty" in transcript.lower()), transcript
        page.wait_for_selector(".card", timeout=60000)
        reply = wait_for_reply(page)
        found = cards(page)
        assert_catalog_cards(found, state, max_price=50)
        for card in found:
            assert "hood" in card["title"].lower()
            assert card["why"].startswith("Why: "), card
        assert format_price(found[0]["price"]) in reply, reply
        seen = page_state(page)
        # 40 ms frames: at least the spoken seconds went out, and the server's VAD and partial transcripts came back.
        assert seen["framesSent"] >= 50, seen
        assert "input_audio_buffer.speech_started" in seen["events"], seen["events"]
        assert "conversation.item.input_audio_transcription.delta" in seen["events"], seen["events"]
        page.wait_for_function("() => window.shoptalk.state.chunksPlayed > 0", timeout=30000)
        page.evaluate("() => [...document.querySelectorAll('.bubble.user')].pop().scrollIntoView({block: 'start'})")
        screenshot(page, "phone-voice-query")
        assert not errors.errors, errors.errors


def test_push_to_talk_with_the_keyboard(server: LiveServer, spoken_wav: Path, state: App) -> None:
    with chromium(fake_mic=spoken_wav) as browser:
        page, errors = open_page(browser, server.http_url, viewport=LAPTOP)
        page.get_by_label("Push to talk").check()
        mic = page.get_by_role("button", name="Hold to talk")
        mic.focus()
        page.keyboard.down(" ")  # held for as long as the clip lasts: 1 s silence, the query, then silence
        page.wait_for_function("() => window.shoptalk.state.framesSent > 130", timeout=30000)
        page.keyboard.up(" ")
        final = page.locator(".bubble.user[data-kind=transcript] .text")
        final.wait_for(timeout=60000)
        assert "hoodie" in (final.text_content() or "").lower()
        page.wait_for_selector(".card", timeout=60000)
        assert_catalog_cards(cards(page), state, max_price=50)
        assert page_state(page)["mode"] == "ptt"
        screenshot(page, "laptop-push-to-talk")
        assert not errors.errors, errors.errors


def test_photo_upload_finds_the_product(server: LiveServer, state: App) -> None:
    product = next(p for p in state.catalog if p.images and "Hoodie" in p.title)
    photo = state.catalog.image_path(product)
    assert photo is not None
    with chromium() as browser:
        page, errors = open_page(browser, server.http_url)
        page.locator("#photo-upload").set_input_files(str(photo))
        page.wait_for_selector(".card", timeout=60000)
        wait_for_reply(page)
        found = cards(page)
        assert_catalog_cards(found, state)
        top = state.catalog.get(found[0]["id"])
        assert top is not None and product.id in (top.id, top.parent_id), (product.id, found[0])
        assert page.locator(".bubble.user img.photo").count() == 1
        screenshot(page, "phone-photo-lookup")
        assert not errors.errors, errors.errors


def test_a_bad_photo_gets_a_clear_message(server: LiveServer, tmp_path: Path) -> None:
    fake = tmp_path / "not-a-photo.png"
    fake.write_bytes(b"this is not an image" * 10)
    with chromium() as browser:
        page, _ = open_page(browser, server.http_url)
        page.locator("#photo-upload").set_input_files(str(fake))
        alert = page.get_by_role("alert")
        alert.wait_for(timeout=20000)
        assert "not accepted" in (alert.text_content() or ""), alert.text_content()
        # The session goes on: a typed question still gets its answer.
        page.get_by_role("textbox", name="Message").fill("what is your return policy?")
        page.keyboard.press("Enter")
        assert "return" in wait_for_reply(page).lower()


def test_barge_in_stops_playback(server: LiveServer, spoken_wav: Path) -> None:
    with chromium(fake_mic=spoken_wav) as browser:
        page, errors = open_page(browser, server.http_url)
        page.get_by_role("textbox", name="Message").fill("show me black hoodies")
        page.get_by_role("button", name="Send").click()
        page.wait_for_function("() => window.shoptalk.state.playing", timeout=60000)
        page.get_by_role("button", name="Start listening").click()
        # The fake microphone starts talking after 1 s of silence; the server's VAD says so; playback stops.
        page.wait_for_function("() => window.shoptalk.state.bargeIns >= 1", timeout=30000)
        seen = page_state(page)
        assert not seen["playing"]
        assert seen["lastBargeIn"]["reason"] == "speech"
        assert seen["lastBargeIn"]["ms"] < 50, seen["lastBargeIn"]
        # Audio of the interrupted reply that was still on its way is not played.
        time.sleep(0.3)
        seen = page_state(page)
        assert not seen["playing"] or seen["events"].count("response.created") >= 2, seen
        # The page's own playing flag (what its styles follow) agrees with the player.
        assert document_flag(page, "playing") == str(seen["playing"]).lower()
        assert not errors.errors, errors.errors


def document_flag(page: Any, name: str) -> str:
    return str(page.evaluate(f"() => document.body.dataset.{name}"))


def test_denied_microphone_explains_and_typing_still_works(server: LiveServer) -> None:
    with chromium(allow_mic=False) as browser:
        page, errors = open_page(browser, server.http_url)
        page.get_by_role("button", name="Start listening").click()
        alert = page.get_by_role("alert")
        alert.wait_for(timeout=20000)
        assert "denied" in (alert.text_content() or "").lower()
        assert page_state(page)["micState"] == "denied"
        page.get_by_role("textbox", name="Message").fill("show me black hoodies under fifty dollars")
        page.keyboard.press("Enter")
        page.wait_for_selector(".card", timeout=60000)
        screenshot(page, "phone-mic-denied")


def test_connection_drop_reconnects_and_resumes(state: App) -> None:
    live = LiveServer(create_app(state=state)).__enter__()
    port = live.port
    try:
        with chromium() as browser:
            page, _ = open_page(browser, live.http_url)
            page.get_by_role("textbox", name="Message").fill("show me black hoodies under fifty dollars")
            page.keyboard.press("Enter")
            page.wait_for_selector(".card", timeout=60000)
            wait_for_reply(page)
            first = cards(page)[0]
            session_id = page_state(page)["sessionId"]

            live.__exit__(None, None, None)  # the server goes away
            page.wait_for_function("() => document.body.dataset.connection === 'offline'", timeout=20000)
            assert "dropped" in (page.get_by_role("alert").text_content() or "")
            live = LiveServer(create_app(state=state), port=port).__enter__()  # and comes back

            page.wait_for_function("() => window.shoptalk.state.resumed", timeout=30000)
            assert page_state(page)["sessionId"] == session_id
            assert "Reconnected" in (page.locator("#notice").text_content() or "")
            # The resumed session remembers what was on screen: "the first one" is the first card from before.
            page.get_by_role("textbox", name="Message").fill("how much is the first one?")
            page.keyboard.press("Enter")
            page.wait_for_function("() => document.querySelectorAll('.bubble.assistant').length >= 2")
            reply = wait_for_reply(page)
            product = state.catalog.get(first["id"])
            assert product is not None
            assert spoken_name(product.title) in reply and format_price(product.price) in reply, (first, reply)
    finally:
        live.__exit__(None, None, None)


def test_phone_layout_and_keyboard_only_use(server: LiveServer, state: App, tmp_path: Path) -> None:
    with chromium() as browser:
        page, errors = open_page(browser, server.http_url)
        # Nothing wider than the phone's screen.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        # Every control has an accessible name a screen reader reads out.
        unnamed = page.evaluate("""() => [...document.querySelectorAll('button, input, select, textarea')]
            .filter(el => !(el.getAttribute('aria-label') || (el.labels && el.labels.length) || el.textContent.trim()))
            .map(el => el.outerHTML)""")
        assert not unnamed, unnamed
        for role, name in [("button", "Start listening"), ("button", "Send"), ("textbox", "Message"),
                           ("radio", "Hands-free"), ("radio", "Push to talk")]:
            assert page.get_by_role(role, name=name).count() == 1, (role, name)
        assert page.get_by_label("Camera").get_attribute("capture") == "environment"
        assert page.get_by_label("Upload photo").get_attribute("capture") is None
        # Keyboard only: skip link to the message box, type, Enter.
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        assert page.evaluate("() => document.activeElement.id") == "message"
        page.keyboard.type("what is your return policy?")
        page.keyboard.press("Enter")
        assert "return" in wait_for_reply(page).lower()
        # Tab reaches the feedback buttons of a card, and Enter sends feedback.
        page.get_by_role("textbox", name="Message").fill("show me black hoodies")
        page.keyboard.press("Enter")
        page.wait_for_selector(".card", timeout=60000)
        like = page.locator(".card button[data-action=like]").first
        like.focus()
        page.keyboard.press("Enter")
        assert like.get_attribute("aria-pressed") == "true"
        # The like reached the session's memory as a feedback event, with the query it answered.
        liked = page.locator(".card").first.get_attribute("data-product-id")
        memory = state.engines.memory
        assert memory is not None
        deadline = time.monotonic() + 10
        while True:
            memory.export_feedback(tmp_path / "feedback.jsonl")
            rows = [json.loads(line) for line in (tmp_path / "feedback.jsonl").read_text().splitlines()]
            if any(r["product_id"] == liked and r["kind"] == "like" for r in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert any(r["product_id"] == liked and r["kind"] == "like" and "hoodie" in r["query"] for r in rows), rows
        screenshot(page, "phone-text-chat")
        assert not errors.errors, errors.errors
