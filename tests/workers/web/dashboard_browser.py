#!/usr/bin/env python3
"""Drives the shoal dashboard in a real Chromium (Debian's chromium + chromium-driver, through
Debian's python3-selenium) for tests/workers/web/dashboard_browser_it.cpp, which starts the
supervisor, its workers and the data on Azurite and checks the work table afterwards.

  dashboard_browser.py --url http://127.0.0.1:PORT --token-file F --heal-file H --out DIR
                       --queue exec --dead-id ID --dest DEST

Checks, in order (each failure ends the run with exit 1 and a screenshot failure-*.png):
  fleet      the workers table lists the running workers (pid, state idle/working)
  queues     the queue's counts and chart are there
  dead       the dead record is listed; its payload (holding <script>) is shown as text and
             nothing in it ran
  refused    requeue from the page without the token is refused (401) and the record stays dead;
             raw POSTs without the token, with a wrong token, from another origin or with a
             form content type are refused too
  requeue    with the token the page requeues it ("requeued 1 record(s)") and it leaves the list
  etl        the runs table and a run's step timeline; the quarantine shows <script> as text
  persistor  blobs per day chart, records per dest, a catalog query through the form
Screenshots of every page go to --out.
"""

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT_S = 60  # upper bound of every wait for a condition (the page polls every 500 ms here)


def http(url, method="GET", body=None, headers=None):
    """(status, parsed JSON body) of a plain HTTP request."""
    req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


class Run:
    def __init__(self, args):
        self.a = args
        self.base = args.url.rstrip("/")
        with open(args.token_file) as f:
            self.token = f.readline().strip()
        self.profile = tempfile.mkdtemp(prefix="shoal-chromium-")
        opts = Options()
        opts.binary_location = args.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,1000", "--user-data-dir=" + self.profile):
            opts.add_argument(flag)
        self.d = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
        self.d.set_page_load_timeout(WAIT_S)

    def close(self):
        self.d.quit()

    def shot(self, name):
        """A PNG of the whole page (not only the window), through the DevTools protocol."""
        size = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        height = min(int(size["height"]) + 20, 8000)
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False})
        try:
            png = self.d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        finally:
            self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        path = os.path.join(self.a.out, name + ".png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(png["data"]))
        print("screenshot", path, flush=True)

    def wait(self, what, pred):
        """pred's first truthy value within WAIT_S. The pages re-render on every poll, so an
        element found a moment ago may be stale: a predicate that raises is asked again."""
        def safe(_):
            try:
                return pred()
            except Exception:  # noqa: BLE001
                return False
        try:
            return WebDriverWait(self.d, WAIT_S, poll_frequency=0.2).until(safe)
        except Exception as e:  # noqa: BLE001 - any failure of the condition is the test's failure
            raise AssertionError("timed out waiting for: " + what + " (" + type(e).__name__ + ")") from None

    def open(self, path):
        self.d.get(self.base + path)
        self.wait("the page to render " + path, lambda: self.d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))

    def css(self, sel):
        return self.d.find_elements(By.CSS_SELECTOR, sel)

    # The pages re-render on every poll, so an element found a moment ago may be gone: retry.
    def click(self, sel):
        def once():
            try:
                self.css(sel)[0].click()
                return True
            except Exception:  # noqa: BLE001 - stale or not there yet
                return False
        self.wait("a click on " + sel, once)

    def type_into(self, sel, text):
        def once():
            try:
                e = self.css(sel)[0]
                e.clear()
                e.send_keys(text)
                return self.css(sel)[0].get_attribute("value") == text
            except Exception:  # noqa: BLE001
                return False
        self.wait("typing into " + sel, once)

    def post(self, action, body, headers):
        return http(self.base + "/api/dead/" + action, "POST", json.dumps(body).encode(), headers)

    # -- checks ---------------------------------------------------------------------------------

    def fleet(self):
        self.open("/fleet")

        def live():
            rows = [(r.get_attribute("data-state"), r.find_elements(By.TAG_NAME, "td")[1].text.replace(",", ""))
                    for r in self.css("#workers-table tbody tr")]
            ok = [r for r in rows if r[0] in ("idle", "working") and r[1].isdigit() and int(r[1]) > 0]
            return len(rows) == self.a.workers and len(ok) == self.a.workers and rows
        rows = self.wait("%d live workers with pids on the fleet page" % self.a.workers, live)
        assert self.css("#hosts-table tbody tr"), "no host listed"
        self.wait("the coordinator to be named", lambda: self.css("#card-coordinator .value")[0].text not in ("", "none"))
        self.shot("fleet")
        print("PASS fleet: %d workers listed with pids" % len(rows), flush=True)

    def queues(self):
        self.open("/queues")
        self.wait("queue " + self.a.queue, lambda: self.css("#queue-" + self.a.queue))
        assert self.css("#chart-" + self.a.queue), "no throughput chart"
        self.shot("queues")
        print("PASS queues", flush=True)

    def dead(self):
        self.open("/dead?queue=" + self.a.queue)
        row_sel = '#dead-table tr[data-id="%s"]' % self.a.dead_id
        self.wait("the dead record on the dead-letter page", lambda: self.css(row_sel))
        text = self.wait("the payload preview", lambda: self.css('pre.payload[data-id="%s"]' % self.a.dead_id)[0].text)
        assert "<script>" in text and "</script>" in text, "payload not shown as text: " + repr(text)
        assert self.d.execute_script("return window.__shoalPwned === undefined"), "the payload's script ran"
        assert not self.css("#dead-table script") and not self.css("#dead-table img"), "payload became markup"
        self.shot("dead")
        print("PASS dead: listed, payload shown as text:", repr(text[:60]), flush=True)

    def refused(self):
        # From the page, without the token.
        self.d.execute_script("sessionStorage.removeItem('shoal-token')")
        self.open("/dead?queue=" + self.a.queue)
        self.wait("the dead record", lambda: self.css('#dead-table tr[data-id="%s"]' % self.a.dead_id))
        self.type_into("#token", "")
        self.click('button.requeue[data-id="%s"]' % self.a.dead_id)
        self.wait("the refusal", lambda: "refused (401)" in self.css("#action-result")[0].text)
        st, body = http(self.base + "/api/dead?queue=" + self.a.queue)
        assert st == 200 and any(r["id"] == self.a.dead_id for r in body["dead"]), "record left the dead list"
        self.shot("dead-refused")
        # Raw requests.
        req = {"queue": self.a.queue, "ids": [self.a.dead_id]}
        js = {"Content-Type": "application/json"}
        cases = [
            ("no token", {**js}, 401),
            ("wrong token", {**js, "Authorization": "Bearer " + "x" * len(self.token)}, 403),
            ("another origin", {**js, "Authorization": "Bearer " + self.token, "Origin": "http://evil.example"}, 403),
            ("cross-site fetch", {**js, "Authorization": "Bearer " + self.token, "Sec-Fetch-Site": "cross-site"}, 403),
            ("form body", {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Bearer " + self.token}, 415),
        ]
        for name, headers, want in cases:
            st, body = self.post("requeue", req, headers)
            assert st == want, "%s: got %s %s, want %d" % (name, st, body, want)
        st, _ = http(self.base + "/api/dead/requeue")
        assert st == 405, "GET of an action answered %s" % st
        st, body = http(self.base + "/api/dead?queue=" + self.a.queue)
        assert any(r["id"] == self.a.dead_id for r in body["dead"]), "a refused request changed the record"
        print("PASS refused: page 401, raw no-token 401, wrong token 403, other origin 403, form 415", flush=True)

    def requeue(self):
        open(self.a.heal_file, "w").close()  # from now on the job accepts the record
        self.open("/dead?queue=" + self.a.queue)
        self.wait("the dead record", lambda: self.css('#dead-table tr[data-id="%s"]' % self.a.dead_id))
        self.type_into("#token", self.token)
        self.click('button.requeue[data-id="%s"]' % self.a.dead_id)
        self.wait("the requeue to be reported", lambda: "requeued 1 record(s)" in self.css("#action-result")[0].text)
        self.wait("the record to leave the dead list",
                  lambda: not self.css('#dead-table tr[data-id="%s"]' % self.a.dead_id))
        self.shot("dead-after-requeue")
        print("PASS requeue: requeued with the token", flush=True)

    def etl(self):
        self.open("/etl")
        self.wait("ETL runs", lambda: self.css("#runs-table tbody tr"))
        self.click("#runs-table tbody tr")
        self.wait("a step timeline with 4 steps", lambda: len(self.css("#timeline rect")) >= 4)
        q = self.wait("the quarantine table", lambda: self.css("#quarantine-table tbody tr")[0].text)
        assert "<script>" in q, "quarantined raw record not shown as text: " + q
        assert self.d.execute_script("return window.__shoalPwned === undefined"), "a quarantined record's script ran"
        self.shot("etl")
        print("PASS etl: runs, timeline, quarantine", flush=True)

    def persistor(self):
        self.open("/persistor")
        self.wait("blobs per day", lambda: self.css("#blobs-per-day rect.bar"))
        self.wait("records per dest", lambda: self.a.dest in self.css("#dests-table")[0].text)
        self.type_into("#q-dest", self.a.dest)
        self.click("#catalog-form button")
        self.wait("catalog query results", lambda: self.css("#catalog-table tbody tr"))
        self.shot("persistor")
        print("PASS persistor: chart, dests, catalog query", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--heal-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--queue", default="exec")
    p.add_argument("--dead-id", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", default="fleet,queues,dead,refused,requeue,etl,persistor")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    run = Run(a)
    try:
        for step in a.steps.split(","):
            try:
                getattr(run, step)()
            except Exception:  # noqa: BLE001 - report which step failed, with a picture
                traceback.print_exc()
                try:
                    run.d.save_screenshot(os.path.join(a.out, "failure-" + step + ".png"))
                    print("page:", run.d.find_element(By.TAG_NAME, "main").text[:3000])
                except Exception:  # noqa: BLE001
                    pass
                print("FAIL", step, flush=True)
                return 1
    finally:
        run.close()
    print("ALL PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
