// The dashboard journey in headless Chromium. Started by run.sh, which provides GATEWAY_URL
// (the real compresh binary, open sign-up), MOCK_URL (the Rust mock provider) and OUTPUT_DIR.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { chromium } from "playwright-core";

const gateway = process.env.GATEWAY_URL;
const mock = process.env.MOCK_URL;
const output = process.env.OUTPUT_DIR;
assert.ok(gateway && mock && output, "run me through dashboard-tests/run.sh");

const XSS = "<script>alert(1)</script>";
const PROVIDER_SECRET = "sk-browser-SECRET-provider-key-4242abcd";
const email = `journey-${Date.now()}@example.com`;
const password = "a long enough password";

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});
after(async () => {
  await browser?.close();
});

const shot = (page, name) =>
  page.screenshot({ path: path.join(output, `${name}.png`), fullPage: true });

async function chat(key) {
  const response = await fetch(`${gateway}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });
  return { status: response.status, body: await response.json() };
}

test("logged-out access redirects to the login page", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  for (const target of ["/dashboard", "/dashboard/settings/api-keys", "/dashboard/usage"]) {
    await page.goto(gateway + target);
    assert.equal(new URL(page.url()).pathname, "/dashboard/login");
  }
  await shot(page, "01-login");
  await context.close();
});

test("sign up, keys, provider, usage, revoke", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  // A CSP violation or any script error would show up here.
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(String(error)));

  // Sign up.
  await page.goto(`${gateway}/dashboard/signup`);
  await page.fill("#email", email);
  await page.fill("#password", password);
  await shot(page, "02-signup");
  await page.click("button[type=submit]");
  assert.equal(new URL(page.url()).pathname, "/dashboard/settings/api-keys");
  const cookies = await context.cookies();
  const session = cookies.find((cookie) => cookie.name === "compresh_session");
  assert.ok(session, "session cookie set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");

  // Point the account's openai provider at the mock, through the dashboard.
  await page.click("text=Provider Keys");
  await page.selectOption("#kind", "openai");
  await page.fill("#base_url", `${mock}/v1`);
  await page.fill("#secret", PROVIDER_SECRET);
  assert.equal(await page.getAttribute("#secret", "type"), "password");
  await page.click("text=Save provider key");
  const providers = await page.content();
  assert.ok(providers.includes("Provider key &#39;openai&#39; saved") || providers.includes("saved"));
  assert.ok(!providers.includes(PROVIDER_SECRET), "the provider key is never shown");
  assert.ok(!providers.includes("SECRET-provider"), "not even partly");
  assert.ok((await page.textContent("table")).includes("abcd"), "only its hint");
  await shot(page, "03-provider-keys");

  // Create a key named like a script: it must render as text.
  await page.click("text=API Keys");
  await page.fill("#name", XSS);
  await page.selectOption("#environment", "staging");
  await page.click("text=Create key");
  const key = (await page.textContent("#new-key")).trim();
  assert.match(key, /^comp_[0-9A-Za-z]{27}$/);
  assert.ok((await page.textContent("body")).includes("you won't see this again"));
  assert.ok((await page.textContent("table")).includes(XSS), "the name shows as text");
  assert.equal(await page.locator("table script").count(), 0, "no script element from the name");
  await shot(page, "04-api-key-created");

  // The copy button copies the key (clipboard of the headless browser).
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: gateway });
  await page.click("button[data-copy=new-key]");
  // The clipboard write is asynchronous: wait for the button to say it is done.
  await page.waitForFunction(
    () => document.querySelector("button[data-copy=new-key]").textContent === "Copied",
  );
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);

  // The key works on the proxy, against the mock provider.
  const ok = await chat(key);
  assert.equal(ok.status, 200, JSON.stringify(ok.body));

  // Usage shows the request (the recorder flushes within about a second).
  let usage = "";
  for (let i = 0; i < 50; i++) {
    await page.goto(`${gateway}/dashboard/usage`);
    usage = await page.textContent("#usage-rows");
    if (usage.includes(XSS)) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.ok(usage.includes(XSS), "usage row of the new key");
  const row = page.locator("#usage-rows tr", { hasText: XSS });
  assert.equal(await row.locator("td.num").first().textContent(), "1", "one request");
  assert.equal(await page.locator("svg.chart rect.bar").count(), 14);
  assert.ok((await page.textContent("svg.chart")).includes("1"), "the bar is labelled");
  assert.ok((await page.textContent("body")).includes("Plan: free"));
  await shot(page, "05-usage");

  // A POST without the CSRF token is refused, even with the session cookie.
  const forged = await context.request.post(`${gateway}/dashboard/settings/api-keys`, {
    form: { name: "forged", environment: "dev" },
    maxRedirects: 0,
  });
  assert.equal(forged.status(), 403);

  // Revoke, with the confirmation step.
  await page.goto(`${gateway}/dashboard/settings/api-keys`);
  await page.click("text=Revoke…");
  assert.ok((await page.textContent("h1")).includes("Revoke key?"));
  await shot(page, "06-revoke-confirm");
  await page.check("input[name=confirm]");
  await page.click("button[type=submit].danger");
  assert.ok((await page.textContent("table")).includes("revoked"));
  await shot(page, "07-api-keys-revoked");
  const refused = await chat(key);
  assert.equal(refused.status, 401);
  assert.equal(refused.body.error.code, "revoked_api_key");

  // Log out: the dashboard is closed again.
  await page.click("text=Log out");
  assert.equal(new URL(page.url()).pathname, "/dashboard/login");
  await page.goto(`${gateway}/dashboard/usage`);
  assert.equal(new URL(page.url()).pathname, "/dashboard/login");

  assert.deepEqual(errors, [], "no console errors (CSP violations included)");
  await context.close();
});
