"""
The web client in a real browser (Debian's chromium, headless): people on
two realms driving the page as they would, found by accessible names only
(issue 15's contract).
"""

import os
import signal

from tests.browser.base import BrowserTestCase
from tests.browser.browser import ActionChains, By, Keys, fresh, wait_for
from tests.test_end_to_end import DEADLINE, Connection

XSS = [
    "<img src=x onerror=\"document.title='pwned';alert(1)\">",
    "<script>alert(2)</script>",
    "<svg onload=alert(3)><b>bold</b>",
    "\"><iframe src=javascript:alert(4)>",
]


class TwoRealmsTests(BrowserTestCase):
    def test_two_people_on_two_realms_chat_live(self):
        self.start()
        self.linked()
        alice, heru = self.page("1"), self.page("2")
        alice.register("alice")
        heru.register("heru")
        phone = self.page("2", width=360, height=740)  # heru's other device
        phone.log_in("heru")

        alice.open("heru@2")
        alice.say("hello heru")
        # heru: a new conversation, unread, its person online
        heru.wait_entry("alice@1", "1 unread", "online")
        phone.wait_entry("alice@1", "1 unread", "online")
        heru.open_entry("alice@1")
        self.assertIn("alice@1", heru.wait_message("hello heru"))
        heru.wait_entry("alice@1", lacking=("unread",))  # seen: marked read
        phone.wait_entry("alice@1", lacking=("unread",))  # on every device
        heru.say("hi alice")  # Enter sends
        self.assertIn("heru@2", alice.wait_message("hi alice"))  # live, the other way
        alice.wait_entry("heru@2", "online", lacking=("unread",))

        # a message while the conversation is not open counts as unread
        heru.open("heru")
        alice.say("are you there?")
        heru.wait_entry("alice@1", "1 unread")

        # a message another realm refuses comes back, plainly
        alice.open("nobody@2")
        alice.say("anyone there?")
        alice.wait_message("anyone there?", "Failed: not delivered to nobody@2")
        alice.wait_entry("@2", "delivery failures", "1 unread")
        alice.open_entry("@2")
        self.assertIn("@2", alice.wait_message("Failed: not delivered to nobody@2: no user 'nobody'"))
        alice.wait_entry("@2", lacking=("unread",))

        # presence changes: heru logs out, alice sees him offline
        heru.press("Log out")
        heru.get("textbox", "Username")
        phone.press("Log out")
        alice.wait_entry("heru@2", "offline")
        alice.open_entry("heru@2")
        wait_for("when heru was last seen", lambda: "last seen" in alice.region())
        heru.log_in("heru")
        alice.wait_entry("heru@2", "online")
        heru.wait_entry("alice@1", "1 unread")

    def test_a_group_across_realms(self):
        self.start()
        self.linked()
        self.client("1", "bob")
        self.client("2", "carl")
        alice, heru = self.page("1"), self.page("2")
        heru.register("heru")
        alice.register("alice")
        alice.fill("textbox", "Group name", "crew")
        alice.fill("textbox", "Members", "heru@2 bob")
        alice.press("Create group")
        wait_for("crew open", lambda: alice.heading() == "crew")
        alice.wait_entry("crew", "group")
        # the owner sees the members and may change them
        alice.press("Group members")
        alice.get("button", "Remove heru@2")
        alice.get("button", "Remove bob")
        # heru's list shows the new group at once, before any post
        heru.wait_entry("crew@1", "group", lacking=("unread",))
        alice.say("welcome")
        heru.wait_entry("crew@1", "group", "1 unread")
        heru.open_entry("crew@1")
        heru.press("Group members")
        wait_for("heru's member list", lambda: "alice@1" in self.members(heru))
        self.assertEqual(heru.all("button", start="Remove "), [])  # not the owner
        heru.say("hi crew")
        self.assertIn("heru@2", alice.wait_message("hi crew"))
        alice.say("hi heru")
        heru.wait_message("alice@1", "hi heru")
        # the owner removes bob and adds carl@2: everyone's list follows
        alice.press("Remove bob")
        wait_for("bob gone at heru", lambda: "bob@1" not in self.members(heru))
        self.assertNotIn("bob", self.members(alice))
        alice.fill("textbox", "Add members", "carl@2")
        alice.press("Add")
        wait_for("carl at heru", lambda: "carl" in self.members(heru))
        self.assertIn("carl@2", self.members(alice))

    @staticmethod
    def members(page):
        def read():
            (members,) = page.all("list", "Group members")
            return [li.text.split("\n")[0] for li in members.find_elements(By.XPATH, "./li")]
        return fresh(read)

    def test_a_file_goes_up_with_progress_and_comes_down_the_same(self):
        self.start()
        self.linked()
        alice, heru = self.page("1", width=1024, height=600), self.page("2")
        alice.register("alice")
        heru.register("heru")
        alice.open("heru@2")
        alice.say("a file follows")
        heru.wait_entry("alice@1", "1 unread")
        heru.open_entry("alice@1")
        name = "report 2026 é.bin"
        payload = os.urandom(3 * 1024 * 1024 + 17)
        path = os.path.join(self.folder, name)
        with open(path, "wb") as f:
            f.write(payload)
        # slowed to about 1.5 s, so that the progress bar is seen moving
        alice.network(offline=False, upload=2 * 1024 * 1024)
        alice.get("file", "Attach file").send_keys(path)
        bar = alice.get("progressbar", "Upload progress")
        wait_for("progress", lambda: 0 < float(bar.get_attribute("value")) < 1)
        alice.get("link", name)  # the sender's log holds it once stored
        self.assertEqual(alice.all("progressbar", "Upload progress"), [])  # gone when done
        link = heru.get("link", name)  # live at the other realm, its own copy
        link.click()
        target = os.path.join(heru.downloads, name)
        wait_for("the download", lambda: os.path.exists(target) and os.path.getsize(target) == len(payload))
        with open(target, "rb") as f:
            self.assertEqual(f.read(), payload)
        self.assertFalse(any("session" in e["message"] for e in heru.logs()))
        heru.say("got it, thanks")
        alice.wait_message("heru@2", "got it, thanks")
        # for the screenshots: a group with news, beside the conversation
        heru.fill("textbox", "Group name", "lunch")
        heru.fill("textbox", "Members", "alice@1")
        heru.press("Create group")
        heru.say("noon at the usual place?")
        alice.wait_entry("lunch@2", "1 unread")
        self.screenshot(alice, "desktop.png")
        narrow = self.page("1", width=360, height=740)
        narrow.log_in("alice")
        narrow.open_entry("heru@2")
        narrow.wait_message(name)
        self.assertLessEqual(narrow.driver.execute_script("return document.documentElement.scrollWidth"), 360)
        self.screenshot(narrow, "narrow.png")

    def test_a_reload_keeps_the_session_and_log_out_ends_it(self):
        self.start()
        alice = self.page("1")
        alice.register("alice")
        alice.open("alice")
        alice.say("note to self")
        alice.driver.refresh()
        alice.get("button", "Log out")  # still logged in
        alice.wait_entry("alice")
        self.assertNotIn("session", alice.driver.current_url)
        alice.press("Log out")
        alice.get("textbox", "Username")
        alice.driver.refresh()
        alice.get("textbox", "Username")  # and stays out
        self.assertEqual(alice.all("button", "Log out"), [])  # hidden: no such button
        alice.fill("textbox", "Username", "alice")
        alice.fill("password", "Password", "wrong")
        alice.press("Log in")
        wait_for("the error", lambda: "wrong username or password" in alice.alert_text())
        alice.log_in("alice")
        # a session ended elsewhere (a new password on another device): back to the login
        other_device = Connection(self.ports["chat1"])
        self.addCleanup(other_device.close)
        other_device.ask("auth alice pw")
        self.assertEqual(other_device.ask("passwd - pw new-pw")["status"], "OK")
        alice.driver.refresh()
        alice.get("textbox", "Username")
        wait_for("the reason", lambda: "expired session" in alice.alert_text())
        alice.log_in("alice", "new-pw")

    def test_keyboard_only(self):
        self.start()
        alice = self.page("1")
        focused = alice.driver.switch_to.active_element
        self.assertEqual(focused.accessible_name, "Username")  # where typing starts
        keys = ActionChains(alice.driver)
        keys.send_keys("alice", Keys.TAB, "pw", Keys.TAB, Keys.TAB)
        keys.send_keys(Keys.ENTER)  # on Register
        keys.perform()
        alice.get("button", "Log out")
        wait_for("the address box", lambda: alice.driver.switch_to.active_element.accessible_name
                 == "Open conversation")
        ActionChains(alice.driver).send_keys("alice", Keys.ENTER).perform()
        wait_for("the message box", lambda: alice.driver.switch_to.active_element.accessible_name
                 == "Message")
        ActionChains(alice.driver).send_keys("typed, not clicked", Keys.ENTER).perform()
        alice.wait_message("alice", "typed, not clicked")
        keys = ActionChains(alice.driver)
        keys.send_keys(Keys.TAB, Keys.TAB)  # Send, then the file input
        keys.perform()
        self.assertEqual(alice.driver.switch_to.active_element.accessible_name, "Attach file")

    def test_what_people_send_is_text_never_html(self):
        self.start()
        heru_chat = self.client("1", "heru")
        alice = self.page("1")
        alice.register("alice")
        alice.open("heru")
        for payload in XSS:  # live, as events
            self.assertEqual(heru_chat.ask(f"send - alice {payload}")["status"], "OK")
        for payload in XSS:
            alice.wait_message(payload)
        alice.say(XSS[0])  # and one's own
        name = "<img src=x onerror=alert(5)>.txt"
        path = os.path.join(self.folder, name)
        with open(path, "w") as f:
            f.write("x")
        alice.get("file", "Attach file").send_keys(path)
        alice.get("link", name)
        alice.driver.refresh()  # and from history
        alice.open_entry("heru")
        for payload in XSS:
            alice.wait_message(payload)
        alice.wait_entry("heru")  # the sidebar shows the last message too
        self.assertEqual(alice.driver.find_elements(
            By.XPATH, "//img | //script[not(@src)] | //*[local-name()='svg'] | //iframe | //b"), [])
        self.assertTrue(alice.no_dialog())
        self.assertEqual(alice.driver.title, "multirealm")

    def test_history_pages_backwards_as_the_log_scrolls_up(self):
        self.start()
        self.client("1", "alice")
        heru_chat = self.client("1", "heru")
        replies = heru_chat.ask(*(f"send - alice message {n:03}" for n in range(70)))
        self.assertEqual({r["status"] for r in replies}, {"OK"}, replies[0])
        alice = self.page("1", height=600)
        alice.log_in("alice")
        alice.wait_entry("heru", "70 unread")
        alice.open_entry("heru")
        alice.wait_message("message 069")
        self.assertFalse(any("message 000" in m for m in alice.messages()))
        log = alice.get("log", "Messages")
        log.send_keys(Keys.HOME)  # keyboard only: the log takes the focus and scrolls
        def scrolled_to_the_first():
            log.send_keys(Keys.HOME)
            return any("message 000" in m for m in alice.messages())
        wait_for("the first message", scrolled_to_the_first)
        texts = [m.split("\n")[-1] for m in alice.messages()]
        self.assertEqual(texts, [f"message {n:03}" for n in range(70)])
        alice.wait_entry("heru", lacking=("unread",))


class RestartTests(BrowserTestCase):
    def test_the_page_reconnects_after_its_realm_restarts_and_catches_up(self):
        one = self.start("1")
        self.start("2")
        self.linked()
        heru = self.client("2", "heru")
        alice = self.page("1")
        alice.register("alice")
        alice.open("heru@2")
        alice.say("before the restart")
        one.send_signal(signal.SIGTERM)
        one.wait(timeout=DEADLINE)
        wait_for("reconnecting", lambda: "Reconnecting" in alice.status())
        self.assertEqual(heru.ask("send - alice@1 while you were away")["status"], "OK")
        # the page stays away until the message is in: no event brings it, history does
        alice.network(offline=True)
        self.start("1")
        other_device = Connection(self.ports["chat1"])
        self.addCleanup(other_device.close)
        other_device.ask("auth alice pw")
        wait_for("the message at realm 1", lambda: other_device.ask("history - private heru@2")["messages"][-1]["msg"] == "while you were away")
        alice.network(offline=False)
        wait_for("connected", lambda: alice.status() == "Connected")
        self.assertIn("heru@2", alice.wait_message("while you were away"))
        alice.say("after the restart")
        alice.get("button", "Log out")
