"""
Driving the web client in Debian's chromium, headless, with selenium:
the browser and its driver named by path (no Selenium Manager download),
and elements found as people and screen readers find them, by role and
accessible name (the contract of issue 15), never by a CSS class.

Selenium calls block: the realms under test run in subprocesses.
"""

import os
import time

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DEADLINE = 20.0  # seconds any one wait may take

try:
    from selenium import webdriver
    from selenium.common.exceptions import (
        NoAlertPresentException,
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # the reason below says so
    webdriver = None


def missing():
    """Why no browser can be driven here, or None."""
    if webdriver is None:
        return "selenium is not installed (pip install '.[test]')"
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if absent:
        return (f"no browser: {' and '.join(absent)} missing "
                "(apt-get install chromium chromium-driver; .ci/run installs them)")
    return None


# How each role is found before its accessible name is compared.
CANDIDATES = {
    "textbox": "//input[not(@type) or @type='text' or @type='search'] | //textarea",
    "password": "//input[@type='password']",
    "button": "//button | //input[@type='submit' or @type='button'] | //summary",
    "link": "//a[@href]",
    "file": "//input[@type='file']",
    "navigation": "//nav | //*[@role='navigation']",
    "list": "//ul | //ol | //*[@role='list']",
    "log": "//*[@role='log']",
    "progressbar": "//progress | //*[@role='progressbar']",
    "alert": "//*[@role='alert']",
    "status": "//*[@role='status']",
}


def wait_for(what, check, deadline=DEADLINE):
    """Poll C{check()} until it returns something true; fail after C{deadline}."""
    end = time.monotonic() + deadline
    last = None
    while True:
        try:
            result = check()
        except (NoSuchElementException, StaleElementReferenceException, LookupError) as e:
            result, last = None, e
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
        time.sleep(0.05)


def fresh(read):
    """C{read()}, again while the page replaces what it was reading (a list re-rendered)."""
    for _ in range(100):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.02)
    return read()


class Page:
    """One browser on one realm's page."""

    def __init__(self, url, downloads, width=1280, height=800):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--no-first-run", f"--window-size={width},{height}"):
            options.add_argument(argument)
        options.add_experimental_option("prefs", {
            "download.default_directory": downloads,
            "download.prompt_for_download": False,
        })
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.downloads = downloads
        self.url = url
        self.console = []
        try:
            self.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                        {"behavior": "allow", "downloadPath": downloads})
            # A window is at least 500 px wide: a phone's width is emulated.
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500,
            })
            self.driver.get(url)
        except BaseException:
            self.driver.quit()  # no browser left behind
            raise

    def network(self, offline, upload=-1):
        """Cut the browser off the network, or let it back (uploads at C{upload} bytes/s)."""
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": upload,
        })

    def quit(self):
        self.driver.quit()

    def logs(self):
        """The browser's console since the last call (kept in C{console} too)."""
        new = self.driver.get_log("browser")
        self.console.extend(new)
        return new

    def all(self, role, name=None, start=None):
        """The elements of C{role} whose accessible name is C{name} (or starts with C{start})."""
        return fresh(lambda: self._all(role, name, start))

    def _all(self, role, name, start):
        found = []
        for element in self.driver.find_elements(By.XPATH, CANDIDATES[role]):
            label = element.accessible_name
            if name is not None and label != name:
                continue
            if start is not None and not label.startswith(start):
                continue
            found.append(element)
        return found

    def get(self, role, name):
        """The one element of C{role} named C{name}, once there is exactly one."""
        def one():
            found = self.all(role, name)
            if len(found) > 1:
                raise AssertionError(f"{len(found)} {role}s named {name!r}")
            return found[0] if found else None
        return wait_for(f"{role} {name!r}", one)

    def fill(self, role, name, text):
        element = self.get(role, name)
        element.clear()
        element.send_keys(text)
        return element

    def press(self, name):
        self.get("button", name).click()

    def alert_text(self):
        return self.driver.find_element(By.XPATH, CANDIDATES["alert"]).text

    def status(self):
        return self.driver.find_element(By.XPATH, CANDIDATES["status"]).text

    def register(self, user, password="pw"):
        self.fill("textbox", "Username", user)
        self.fill("password", "Password", password)
        self.press("Register")
        self.get("button", "Log out")

    def log_in(self, user, password="pw"):
        self.fill("textbox", "Username", user)
        self.fill("password", "Password", password)
        self.press("Log in")
        self.get("button", "Log out")

    def conversations(self):
        """The accessible names of the entries of the list labelled Conversations."""
        return fresh(self._conversations)

    def _conversations(self):
        (nav,) = self.all("navigation", "Conversations") or self.all("list", "Conversations")
        return [b.accessible_name for b in nav.find_elements(By.XPATH, ".//button | .//a")]

    def entry(self, name):
        """The entry named for conversation C{name} (its name, then ", ..." or nothing)."""
        labels = self.conversations()
        for label in labels:
            if label == name or label.startswith(name + ","):
                return label
        raise LookupError(f"no conversation {name!r} in {labels}")

    def wait_entry(self, name, *having, lacking=()):
        """The entry of C{name} once its name holds each of C{having} and none of C{lacking}."""
        seen = []

        def ready():
            label = self.entry(name)
            seen[:] = [label]
            ok = all(h in label for h in having) and not any(x in label for x in lacking)
            return label if ok else None
        try:
            return wait_for(f"{name} with {having} without {lacking}", ready)
        except AssertionError as e:
            raise AssertionError(f"{e}; the entry: {seen}") from None

    def open_entry(self, name):
        fresh(lambda: self._open_entry(name))

    def _open_entry(self, name):
        (nav,) = self.all("navigation", "Conversations")
        for button in nav.find_elements(By.XPATH, ".//button"):
            label = button.accessible_name
            if label == name or label.startswith(name + ","):
                button.click()
                return
        raise LookupError(name)

    def open(self, address):
        self.fill("textbox", "Open conversation", address)
        self.press("Open")
        wait_for(f"conversation {address}", lambda: self.heading() == address)

    def conversation(self):
        """The region holding the Messages log: the open conversation."""
        log = self.get("log", "Messages")
        return log.find_element(By.XPATH, "ancestor::*[self::section or @role='region'][1]")

    def heading(self):
        return self.conversation().accessible_name

    def region(self):
        """What the open conversation's region shows (its name, the person's state, ...)."""
        return self.conversation().text

    def say(self, text):
        """Type a message and send it with Enter."""
        self.fill("textbox", "Message", text).send_keys(Keys.ENTER)
        self.wait_message(text)

    def messages(self):
        """Each message of the log labelled Messages: its element's text."""
        log = self.get("log", "Messages")
        return fresh(lambda: [m.text for m in log.find_elements(By.XPATH, "./*")])

    def wait_message(self, *parts):
        """The text of the first message holding every one of C{parts}."""
        def there():
            for text in self.messages():
                if all(part in text for part in parts):
                    return text
            return None
        return wait_for(f"a message with {parts}", there)

    def no_dialog(self):
        """True when no JavaScript alert is open."""
        try:
            self.driver.switch_to.alert
        except NoAlertPresentException:
            return True
        return False

    def screenshot(self, path):
        self.driver.save_screenshot(path)


__all__ = ["ActionChains", "By", "Keys", "Page", "fresh", "missing", "wait_for", "DEADLINE"]
