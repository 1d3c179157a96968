"""The interactive HTML view in a real browser (headless Chromium): search, click, expand,
teacher/student toggle, and a screenshot that is not blank."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torchvision
from browser import available, chrome

import fxgrow
from fxgrow.drawing import render

why = available() or (None if render.dot_binary() else "Graphviz `dot` not installed")
pytestmark = pytest.mark.skipif(why is not None, reason=why or "")

X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chrome(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


def page_data(path) -> dict:
    text = path.read_text(encoding="utf-8")
    raw = re.search(
        r'<script id="fxgrow-data" type="application/json">(.*?)</script>', text, re.S
    ).group(1)
    return json.loads(raw.replace("<\\/", "</"))


def classed(path, view: str, cls: str) -> int:
    """How many SVG elements of ``view`` (``v0``...) carry class ``cls``: read from the file."""
    text = path.read_text(encoding="utf-8")
    body = re.search(rf'<div class="view" id="{view}" hidden>(.*?)</div>', text, re.S).group(1)
    return sum(1 for c in re.findall(r'class="([^"]*)"', body) if cls in c.split())


def search(driver, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "search")
    box.clear()
    box.send_keys(text, Keys.ENTER)


def not_blank(png: bytes) -> None:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"
    white = (
        max(c for c, rgb in colours if rgb == (255, 255, 255))
        if any(rgb == (255, 255, 255) for _, rgb in colours)
        else 0
    )
    assert white < 0.97 * image.width * image.height


def test_resnet50_grown(tmp_path, browser):
    from selenium.webdriver.common.by import By

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    student = fxgrow.widen(model, X32, factor=1.5)
    out = tmp_path / "resnet50.html"
    fxgrow.draw(model, X32, out, student=student)
    data = page_data(out)
    assert [v["key"] for v in data["views"] if "/" not in v["key"]] == ["teacher", "student"]
    browser.get(out.as_uri())
    g = next(g for g in data["groups"] if g["name"] == "layer2.0.conv1")
    assert (g["old"], g["width"]) == (128, 192)

    search(browser, "layer2.0.conv1")
    lit = browser.execute_script("return document.querySelectorAll('#v0 svg .hl').length")
    expected = classed(out, "v0", f"g{g['i']}") + classed(out, "v0", f"b{g['i']}")
    assert lit == expected > 0 and expected < classed(out, "v0", "fxedge")
    dimmed = browser.execute_script(
        "return document.querySelector('#v0 svg').classList.contains('dim')"
    )
    assert dimmed
    info = browser.find_element(By.ID, "info").text
    assert (
        "layer2.0.conv1" in info
        and "128 → 192" in info
        and "layer2.0.conv1.weight[0] produce" in info
    )

    # the student: click an edge of the widened trunk and read its panel
    browser.find_element(By.CSS_SELECTOR, "#which input[value=student]").click()
    assert browser.execute_script("return fxgrow.state.view") == "student"
    sv = next(v["id"] for v in data["views"] if v["key"] == "student")
    h = next(g for g in data["groups"] if g["name"] == "layer3.0.conv3")
    assert (h["old"], h["width"]) == (1024, 1536)
    edge = browser.find_element(By.CSS_SELECTOR, f"#{sv} svg g.fxedge.g{h['i']} path")
    browser.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", edge
    )
    info = browser.find_element(By.ID, "info").text
    assert info.startswith("layer3.0.conv3") and "1024 → 1536" in info
    lit = browser.execute_script(f"return document.querySelectorAll('#{sv} svg .hl').length")
    assert lit == classed(out, sv, f"g{h['i']}") + classed(out, sv, f"b{h['i']}") > 1

    # a blocked group lists its blocker's node and reason
    fc = next(g for g in data["groups"] if g["blockers"])
    browser.execute_script(f"fxgrow.select({fc['i']})")
    info = browser.find_element(By.ID, "info").text
    assert "blockers" in info and fc["blockers"][0]["node"] in info
    not_blank(browser.get_screenshot_as_png())
    browser.save_screenshot(str(tmp_path / "resnet50.png"))


def test_densenet121_expand_and_collapse(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    torch.manual_seed(0)
    model = torchvision.models.densenet121().eval()
    out = tmp_path / "densenet121.html"
    fxgrow.draw(model, X32, out)
    data = page_data(out)
    teacher = data["views"][0]
    assert teacher["key"] == "teacher" and teacher["folded"], "DenseNet's overview is folded"
    browser.get(out.as_uri())
    n_items = browser.execute_script("return document.querySelectorAll('#v0 svg .fxitem').length")
    assert n_items <= 160, "the overview stays readable"

    folded = teacher["folded"][len(teacher["folded"]) // 2]
    search(browser, folded)  # zooms to the box
    assert browser.execute_script("return fxgrow.state.view") == "teacher"
    box = browser.find_element(By.CSS_SELECTOR, f"#v0 svg [id='v0_box:{folded}']")
    ActionChains(browser).double_click(box).perform()
    assert browser.execute_script("return fxgrow.state.view") == f"teacher/{folded}"
    detail = next(v for v in data["views"] if v["key"] == f"teacher/{folded}")
    ops = browser.execute_script(
        f"return document.querySelectorAll('#{detail['id']} svg .fxnode').length"
    )
    assert ops >= 2
    browser.find_element(By.ID, "back").click()
    assert browser.execute_script("return fxgrow.state.view") == "teacher"

    # a module folded inside a box is found in its box's detailed view
    inner = next(m for m in detail["modules"] if m != folded)
    search(browser, inner)
    assert browser.execute_script("return fxgrow.state.view") == f"teacher/{folded}"
    found = browser.execute_script("return document.querySelectorAll('.found').length")
    assert found == 1
    # and a group: its members listed
    g = data["groups"][5]
    search(browser, g["name"])
    assert browser.find_element(By.ID, "info").text.startswith(g["name"])
    not_blank(browser.get_screenshot_as_png())


def test_llama_grown_2_to_4_layers(tmp_path, browser):
    transformers = pytest.importorskip("transformers")
    from selenium.webdriver.common.by import By

    cfg = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_cache=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 128, (1, 8))
    student = fxgrow.grow(model, ids, blocks={"model.layers": 4}, as_graph=True)
    out = tmp_path / "llama.html"
    fxgrow.draw(model, ids, out, student=student)
    data = page_data(out)
    student_view = next(v for v in data["views"] if v["key"] == "student")
    assert "model.layers.3" in student_view["folded"]
    browser.get(out.as_uri())
    search(browser, "model.layers.3")  # only in the student: the page switches to it
    assert browser.execute_script("return fxgrow.state.side") == "student"
    box = browser.find_element(By.CSS_SELECTOR, ".found")
    assert box.get_attribute("id") == f"{student_view['id']}_box:model.layers.3"
    assert "fxbox" in box.get_attribute("class")
    not_blank(browser.get_screenshot_as_png())
