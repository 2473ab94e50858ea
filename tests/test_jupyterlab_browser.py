"""Both notebooks in JupyterLab, driven by headless Chromium: what a user sees.

JupyterLab (a test dependency) is served on a loopback port with a throw-away config, data and
settings folder; Debian's ``chromium`` and ``chromedriver`` (``make test`` installs them) run
through Selenium. Each notebook is opened and run cell by cell through JupyterLab's own commands;
then the page is checked: the widgets' controls, tables whose headers sit over their columns, a
chart with a dated time axis, hover values, a zoom that the kernel answers with finer candles,
label colours that follow the theme, a live view redrawn within a second of a write, and no
error in the browser's console. Screenshots of each widget go to ``tests/artifacts/browser/``
(``make doc-images`` also copies them to ``docs/images/``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("jupyterlab")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from mktsframe.server.launch import stop_process, wait_until_serving  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts" / "browser"
DOC_IMAGES = REPO / "docs" / "images"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# As root on a machine whose only network is loopback: no sandbox, no background connections.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1600"]  # fmt: skip

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    if os.environ.get("CI"):
        raise RuntimeError("chromium and chromedriver are missing: `make test` installs them (apt-get)")
    pytest.skip("needs Debian's chromium and chromium-driver (make test installs them)", allow_module_level=True)

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """JupyterLab on a loopback port, serving copies of the notebooks (so autosave leaves ours alone)."""
    tmp = tmp_path_factory.mktemp("lab")
    nbdir = tmp / "notebooks"
    nbdir.mkdir()
    for p in (REPO / "notebooks").glob("*.ipynb"):
        shutil.copy(p, nbdir / p.name)
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR",
                 "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR"):  # fmt: skip
        env[name] = str(tmp / name.lower())
    # No "get Jupyter news?" prompt over the notebook (and no fetch: there is no internet).
    notify = tmp / "jupyterlab_settings_dir" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notify.parent.mkdir(parents=True)
    notify.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    log = (tmp / "lab.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
         "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={nbdir}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, cwd=nbdir, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, f"{url}/api", (tmp / "lab.log").read_text, timeout=60, name="JupyterLab")
        yield url, nbdir
    finally:
        proc.send_signal(signal.SIGINT)  # Jupyter's clean stop (twice: it asks first), kernels shut down first
        time.sleep(0.5)
        stop_process(proc, signal.SIGINT)
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(150)
    try:
        yield driver
    finally:
        driver.quit()


def js(driver: Any, body: str, *args: Any) -> Any:
    """Run the body of an async JavaScript function in the page (``args`` as ``args``); its result."""
    r = driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; const args = Array.from(arguments).slice(0, -1);"
        "(async () => {" + body + "})().then(r => done({ok: r === undefined ? null : r}),"
        " e => done({error: String((e && e.stack) || e)}));",
        *args,
    )
    if "error" in r:
        raise AssertionError(f"in the page: {r['error']}")
    return r["ok"]


OPEN = """
const sleep = ms => new Promise(r => setTimeout(r, ms));
while (!window.jupyterapp) await sleep(100);
const app = window.jupyterapp;
await app.restored;
while (!(app.shell.currentWidget && app.shell.currentWidget.sessionContext)) await sleep(100);
const panel = app.shell.currentWidget;
await panel.context.ready;
await panel.sessionContext.ready;
while (panel.sessionContext.session?.kernel?.status !== 'idle') await sleep(100);
await app.commands.execute('apputils:change-theme', {theme: args[0]});
while (document.body.dataset.jpThemeName !== args[0]) await sleep(50);
"""

# Run the cells above (or from) the first cell whose source starts with args[0] ("" = all cells);
# JupyterLab's command resolves when they have run (false when one failed).
RUN = """
const app = window.jupyterapp, panel = app.shell.currentWidget;
const cells = panel.content.widgets;
const i = args[0] ? cells.findIndex(c => c.model.sharedModel.getSource().startsWith(args[0])) : cells.length;
if (i < 0) throw new Error('no cell starts with ' + args[0]);
panel.content.activeCellIndex = Math.min(i, cells.length - 1);
const command = args[1] ? 'notebook:run-all-below' : (args[0] ? 'notebook:run-all-above' : 'notebook:run-all-cells');
const ok = await app.commands.execute(command);
const errors = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
  .map(e => e.textContent).filter(t => /Error|Traceback/.test(t));
return {ok, errors, prompts: cells.filter(c => c.model.type === 'code').map(c => c.model.executionCount)};
"""

SHUTDOWN = "await window.jupyterapp.shell.currentWidget.sessionContext.shutdown();"

# What the page shows of one widget (args[0]: the element).
INSPECT = """
const w = args[0];
const rect = e => e.getBoundingClientRect();
// plotly re-sizes 100 ms after it is told to (a debounce): give a chart drawn at its default a moment
for (let i = 0; i < 30; i++) {
  const s = w.querySelector('.mkts-chart .main-svg');
  if (!s || rect(s).width > 0.9 * rect(w).width) break;
  await new Promise(r => setTimeout(r, 100));
}
// x2: the bottom (volume) pane's axis, which carries the dates
const ticks = [...w.querySelectorAll('.mkts-chart .x2tick text')].map(t => t.textContent);
const candles = [...w.querySelectorAll('.mkts-chart .trace.boxes path')];
const tick = w.querySelector('.mkts-chart .x2tick text');
const svg = w.querySelector('.mkts-chart .main-svg');
const probe = document.createElement('span');
probe.style.color = 'var(--jp-ui-font-color1)';
document.body.appendChild(probe);
const themeText = getComputedStyle(probe).color;
probe.remove();
const table = w.querySelector('.mkts-table table');
let misaligned = null, headers = [];
if (table) {
  headers = [...table.querySelectorAll('thead th')].map(th => th.textContent.trim());
  const cells = [...table.querySelectorAll('tbody tr:first-child td')];
  misaligned = [...table.querySelectorAll('thead th')].map((th, i) =>
      Math.abs(rect(th).right - rect(cells[i]).right) + Math.abs(rect(th).left - rect(cells[i]).left))
    .reduce((a, b) => Math.max(a, b), 0);
}
return {
  ticks, candles: candles.length, nanPaths: candles.filter(p => (p.getAttribute('d') || '').includes('NaN')).length,
  title: w.querySelector('.mkts-chart .gtitle')?.textContent ?? null,
  tickColour: tick ? getComputedStyle(tick).fill : null, themeText,
  dropdowns: w.querySelectorAll('select').length, dates: w.querySelectorAll('input[type=date]').length,
  buttons: [...w.querySelectorAll('button')].map(b => b.textContent.trim()),
  headers, misaligned, rows: table ? table.querySelectorAll('tbody tr').length : 0,
  width: rect(w).width, chartWidth: svg ? rect(svg).width : 0,
};
"""

# Write a bar in the kernel (args[1]: code) and time until the live view (args[0]) shows args[2]
# in its table and chart title (ms, from the request being sent).
LIVE = """
const live = args[0], marker = args[2];
const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
const shown = () => live.querySelector('.mkts-table').textContent.includes(marker)
  && (live.querySelector('.mkts-chart .gtitle')?.textContent ?? '').includes(args[3]);
return await new Promise((resolve, reject) => {
  let sent = 0, replied = null;
  const obs = new MutationObserver(() => {
    if (shown()) { obs.disconnect(); resolve({ms: performance.now() - sent, replied}); }
  });
  obs.observe(live, {subtree: true, childList: true, characterData: true, attributes: true});
  sent = performance.now();
  kernel.requestExecute({code: args[1]}).done.then(() => { replied = performance.now() - sent; });
  setTimeout(() => { obs.disconnect(); reject(new Error('the live view did not show the write in 10 s')); }, 10000);
});
"""


def widget(driver: Any, selector: str) -> Any:
    els = driver.find_elements(By.CSS_SELECTOR, selector)
    assert len(els) == 1, f"{len(els)} elements match {selector}"
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", els[0])
    return els[0]


def screenshot(driver: Any, el: Any, name: str) -> Path:
    # The active cell's toolbar floats over the top right of its output: not part of the widget.
    driver.execute_script("document.querySelectorAll('.jp-cell-toolbar').forEach(e => e.style.display = 'none');"
                          "arguments[0].scrollIntoView({block: 'center'})", el)
    time.sleep(0.3)  # plotly's transitions
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    el.screenshot(str(path))
    if os.environ.get("MKTS_UPDATE_DOC_IMAGES"):
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOC_IMAGES / path.name)
    return path


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def assert_dated_chart(seen: dict[str, Any], min_candles: int) -> None:
    assert any(re.search(r"\b20\d\d\b", t) for t in seen["ticks"]), f"no dated x axis: {seen['ticks']}"
    assert any(re.fullmatch(r"\d\d:\d\d|[A-Z][a-z]{2} \d+|[A-Z][a-z]{2} \d+, 20\d\d", t) for t in seen["ticks"])
    assert seen["candles"] >= min_candles
    assert seen["nanPaths"] == 0
    # Labels take the theme's text colour (plotly writes its own inline; our stylesheet wins).
    assert seen["tickColour"] == seen["themeText"], seen
    assert seen["chartWidth"] > 0.9 * seen["width"]  # the chart fills the output area


def run(driver: Any, first: str = "", below: bool = False) -> None:
    result = js(driver, RUN, first, below)
    assert result["ok"] is True, result
    assert result["errors"] == [], result


def test_quickstart_in_jupyterlab(lab: tuple[str, Path], browser: Any) -> None:
    url, _nbdir = lab
    browser.get(f"{url}/lab/tree/quickstart.ipynb?reset")  # ?reset: a fresh workspace, this notebook only
    js(browser, OPEN, "JupyterLab Dark")
    try:
        run(browser, "## Clean up")  # everything but the clean-up: the live view keeps running

        # The symbol browser: controls, a dated candle chart of 5Min candles, an aligned table.
        sb = widget(browser, ".mkts-browser")
        seen = js(browser, INSPECT, sb)
        assert (seen["dropdowns"], seen["dates"]) == (1, 2)
        assert {"candles", "line"} <= set(seen["buttons"])
        assert seen["title"] == "ETH/1Min/OHLCV · 5Min candles"
        assert_dated_chart(seen, 288)
        assert seen["headers"] == ["Epoch (UTC)", "Open", "High", "Low", "Close", "Volume"]
        assert seen["rows"] == 50
        assert seen["misaligned"] < 1, "a header is off its column"
        assert "rgb(0, 0, 0)" not in (seen["tickColour"], seen["themeText"])  # dark theme: light text
        screenshot(browser, sb, "symbol-browser")

        # Hover: the unified label shows the candle's prices.
        plot_area = sb.find_element(By.CSS_SELECTOR, ".mkts-chart .nsewdrag")
        ActionChains(browser).move_to_element(plot_area).perform()
        hover = ""
        for _ in range(50):
            hover = " ".join(t.text for t in sb.find_elements(By.CSS_SELECTOR, ".mkts-chart .hoverlayer text"))
            if "close" in hover:
                break
            time.sleep(0.1)
        assert all(k in hover for k in ("open", "high", "low", "close")), hover

        # Zoom: drag over a sixth of the plot; the kernel re-draws that range with finer candles.
        w = plot_area.size["width"]
        ActionChains(browser).move_to_element_with_offset(plot_area, -w // 6, 0).click_and_hold() \
            .move_by_offset(w // 6, 0).release().perform()
        for _ in range(100):
            seen = js(browser, INSPECT, sb)
            if seen["title"] != "ETH/1Min/OHLCV · 5Min candles":
                break
            time.sleep(0.1)
        assert seen["title"] == "ETH/1Min/OHLCV", seen  # 4 hours: 240 bars fit, drawn as they are
        assert seen["nanPaths"] == 0

        # df.mkts.plot(): the same chart for any frame.
        plot = widget(browser, ".jp-OutputArea-output > .mkts-chart")
        seen = js(browser, INSPECT, plot)
        assert seen["title"] == "BTC/1Min/OHLCV · 5Min candles"
        assert_dated_chart(seen, 288)
        screenshot(browser, plot, "plot")

        # The live view: a write in the kernel is on screen (table and chart) within a second.
        live = widget(browser, ".mkts-live")
        seen = js(browser, INSPECT, live)
        assert seen["dropdowns"] == 1
        assert "Live" in seen["buttons"]
        assert seen["title"] == "BTC/1Min/OHLCV: last 125 rows to 2024-01-05 00:04:00 UTC"
        assert_dated_chart(seen, 125)
        code = ('pd.DataFrame({"Open": [100.5], "High": [101.75], "Low": [100.25], "Close": [101.125], '
                '"Volume": [321.0]}, index=pd.DatetimeIndex(["2024-01-05 00:05"], tz="UTC")).astype("f4")'
                '.to_mkts("BTC/1Min/OHLCV")')  # fmt: skip
        timing = js(browser, LIVE, live, code, "101.125", "00:05:00 UTC")
        print(f"live view: on screen {timing['ms']:.0f} ms after the write was sent (reply: {timing['replied']})")
        assert timing["ms"] < 1000, timing
        screenshot(browser, live, "live-view")
    finally:
        run(browser, "## Clean up", below=True)  # stops the notebook's server, closes the roots
        js(browser, SHUTDOWN)
    assert console_errors(browser) == []


def test_from_marketstore_in_jupyterlab(lab: tuple[str, Path], browser: Any) -> None:
    url, _nbdir = lab
    browser.get(f"{url}/lab/tree/from-marketstore.ipynb?reset")
    js(browser, OPEN, "JupyterLab Light")
    run(browser)
    tables = browser.find_elements(By.CSS_SELECTOR, ".jp-RenderedHTMLCommon table.dataframe")
    assert len(tables) >= 3  # pymarketstore's frames and ours, as pandas renders them
    plot = widget(browser, ".jp-OutputArea-output > .mkts-chart")
    seen = js(browser, INSPECT, plot)
    assert seen["title"] == "BTC/1Min/OHLCV over HTTP"  # 120 bars: drawn as they are
    assert_dated_chart(seen, 120)
    screenshot(browser, plot, "plot-light")
    js(browser, SHUTDOWN)
    assert console_errors(browser) == []
