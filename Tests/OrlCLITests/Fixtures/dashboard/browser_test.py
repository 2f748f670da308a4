"""Drives the dashboard in headless Chromium (Debian's, through chromedriver and
Selenium): a wrong token refused, log in, the fleet, a run's graph, cross-site and
token-less decisions refused, approve the waiting step, the run finishes. Screenshots go
to ARTIFACTS. Exit 0 when every check passed; the failing check is printed otherwise.

usage: browser_test.py URL TOKEN RUN_ID AGENTS(comma-separated) ARTIFACTS
"""
import json, os, sys, time, urllib.error, urllib.request
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, token, run_id, agents, artifacts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(","), sys.argv[5]
os.makedirs(artifacts, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
# CI runs as root with no display.
for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(30)


def shot(name):
    path = os.path.join(artifacts, name + ".png")
    driver.save_screenshot(path)
    print("screenshot", path)


def check(condition, what):
    if not condition:
        shot("failure")
        print("FAILED:", what, "\n", driver.current_url, "\n", driver.page_source[:3000])
        driver.quit()
        sys.exit(1)


def eventually(condition, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.3)
        driver.refresh()
    check(False, what)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


opener = urllib.request.build_opener(NoRedirect)


def left(element):
    """True once `element`'s page is gone. Mid-navigation, chromedriver may answer for an
    element of the page being left with "Node with given id does not belong to the
    document" (a plain WebDriverException) rather than as a stale element, which
    Selenium's `staleness_of` does not take for staleness."""
    def gone(_):
        try:
            element.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            if "does not belong to the document" in str(error):
                return True
            raise
    return gone


def submit(button):
    """Clicks and waits for the next page: the old one's elements go stale."""
    button.click()
    WebDriverWait(driver, 30).until(left(button))


def type_into(element_id, text):
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def post(path, fields, cookie, origin):
    body = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in fields.items()).encode()
    request = urllib.request.Request(url + path, data=body, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Cookie", "orl_session=" + cookie)
    if origin:
        request.add_header("Origin", origin)
    try:
        return opener.open(request).status
    except urllib.error.HTTPError as error:
        return error.code


try:
    # Without a session: the login page. A wrong token is refused.
    driver.get(url + "/ui")
    check(driver.current_url.endswith("/ui/login"), "not sent to the login page")
    type_into("token", "not-the-token")
    submit(driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    check(len(driver.find_elements(By.ID, "login-error")) == 1, "a wrong token was not refused")
    check(driver.get_cookie("orl_session") is None, "a wrong token got a session")
    shot("1-login-refused")

    # The right one: a session cookie, HttpOnly and SameSite=Strict, and the fleet.
    type_into("token", token)
    submit(driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    cookie = driver.get_cookie("orl_session")
    check(cookie is not None and cookie["httpOnly"] and cookie.get("sameSite") == "Strict", f"cookie flags: {cookie}")
    check(driver.execute_script("return document.cookie") == "", "the session cookie is readable by scripts")
    check(driver.current_url.rstrip("/").endswith("/ui"), "not on the fleet page after logging in")
    fleet = lambda: driver.find_element(By.ID, "fleet").text
    eventually(lambda: all(a in fleet() for a in agents) and fleet().count("Running") >= len(agents), "the fleet's agents are not Running")
    check(run_id in driver.find_element(By.TAG_NAME, "main").text, "the waiting approval is not on the fleet page")
    shot("2-fleet")

    # The run: its graph and its waiting gate.
    submit(driver.find_element(By.LINK_TEXT, run_id))
    check(driver.current_url.endswith("/ui/runs/" + run_id), "the run link went elsewhere")
    check(len(driver.find_elements(By.CSS_SELECTOR, "#dag g.node")) >= 1, "no DAG drawn")
    check("WaitingApproval" in driver.find_element(By.CSS_SELECTOR, "#dag").text, "the gate is not shown waiting")
    shot("3-run-waiting")

    # Cross-site and token-less decisions are refused, and change nothing.
    form = driver.find_element(By.CSS_SELECTOR, "form[data-step=gate]")
    csrf = form.find_element(By.NAME, "csrf").get_attribute("value")
    fields = {"step": "gate", "decision": "approve", "reason": "forged", "csrf": csrf}
    check(post(f"/ui/runs/{run_id}/decide", fields, cookie["value"], "http://evil.example") == 403, "a cross-site POST was not refused")
    check(post(f"/ui/runs/{run_id}/decide", fields, cookie["value"], None) == 403, "a POST without Origin was not refused")
    origin = url.rstrip("/")
    no_token = dict(fields, csrf="0" * 64)
    check(post(f"/ui/runs/{run_id}/decide", no_token, cookie["value"], origin) == 403, "a POST with a wrong csrf token was not refused")
    check(post(f"/ui/runs/{run_id}/decide", fields, "x.y", origin) == 303, "a POST without a session was not sent to log in")
    driver.refresh()
    check("WaitingApproval" in driver.find_element(By.CSS_SELECTOR, "#dag").text, "a refused POST decided the gate")

    # Approve with a reason: the run goes on and finishes.
    form = driver.find_element(By.CSS_SELECTOR, "form[data-step=gate]")
    form.find_element(By.NAME, "reason").send_keys("looks good")
    submit(form.find_element(By.CSS_SELECTOR, "button.approve"))
    eventually(lambda: "Succeeded" in driver.find_element(By.ID, "run-phase").text, "the run did not finish after the approval", 60)
    check("looks good" in driver.find_element(By.TAG_NAME, "main").text, "the reason is not shown")
    shot("4-run-finished")

    for page in ("budgets", "sources", "alerts", "events"):
        driver.get(url + "/ui/" + page)
        check(driver.find_element(By.TAG_NAME, "h1").text != "", f"/ui/{page} is empty")
    driver.get(url + "/ui/budgets")
    check(len(driver.find_elements(By.ID, "spend-chart")) == 1, "no spend chart")
    shot("5-budgets")
    print(json.dumps({"ok": True}))
finally:
    driver.quit()
