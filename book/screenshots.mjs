// Screenshot every page of the built book and check that its sliders work without a kernel.
//
//   bash book/build.sh && node book/screenshots.mjs [HTML_DIR] [OUT_DIR]
//
// HTML_DIR defaults to book/_build/html, OUT_DIR to screenshots/ at the repository root
// (git-ignored). Needs Debian's `chromium` (apt-get install chromium) and playwright-core
// (`npm ci` in book/; a devDependency). The book is served by a local HTTP server; any
// request to another host fails the run, as does a page error or a slider that does not
// change the visible frame.
//
// For each page with a slider: focus the first slider's [role=slider] handle, press
// ArrowRight twice (ArrowLeft if it starts at its maximum), and check that the visible
// frame changed (a jslink'ed Stack in the browser, no Python). Pages with tabs (ToggleButtons
// over image sets): click each tab and check that it shows frames no other tab showed.
import { createServer } from "node:http";
import { readFile, readdir, mkdir, stat } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, extname, join, resolve, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const htmlDir = resolve(process.argv[2] ?? join(here, "_build", "html"));
const outDir = resolve(process.argv[3] ?? join(here, "..", "screenshots"));
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

// Known, harmless messages from upstream packages (not from this book):
// sphinx-thebe 0.3.1 adds its config script twice under Jupyter Book 1.0 (the second
// `const THEBE_JS_URL` is a redeclaration; thebe is not used here), and the pydata theme
// logs an empty theme mode on a first visit before it falls back to "auto".
const IGNORED = [/Identifier 'THEBE_JS_URL' has already been declared/, /Got invalid theme mode/];
const ignored = (text) => IGNORED.some((re) => re.test(text));

const TYPES = {
  ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png",
  ".svg": "image/svg+xml", ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf",
  ".eot": "application/vnd.ms-fontobject", ".json": "application/json", ".map": "application/json",
  ".txt": "text/plain", ".inv": "application/octet-stream", ".ico": "image/x-icon",
};

function serve(root) {
  const server = createServer(async (req, res) => {
    try {
      let path = decodeURIComponent(new URL(req.url, "http://x").pathname);
      path = normalize(join(root, path));
      if (!path.startsWith(root)) throw new Error("outside root");
      if ((await stat(path)).isDirectory()) path = join(path, "index.html");
      const body = await readFile(path);
      res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end("not found");
    }
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

// The visible frame of each jslink'ed stack: the src of the image that is displayed.
const visibleFrames = () =>
  Array.from(document.querySelectorAll(".widget-stack, .jupyter-widgets.widget-container"))
    .flatMap((el) => Array.from(el.querySelectorAll("img")))
    .filter((img) => img.offsetParent !== null)
    .map((img) => img.currentSrc || img.src);

async function main() {
  if (!existsSync(join(htmlDir, "index.html"))) {
    throw new Error(`${htmlDir}/index.html not found; build the book first (bash book/build.sh)`);
  }
  await mkdir(outDir, { recursive: true });
  const skip = new Set(["genindex.html", "search.html", "index.html"]);
  const pages = (await readdir(htmlDir)).filter((f) => f.endsWith(".html") && !skip.has(f)).sort();

  const server = await serve(htmlDir);
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-gpu", "--disable-quic"],
  });
  const problems = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    for (const file of pages) {
      const page = await context.newPage();
      const errors = [];
      page.on("pageerror", (e) => { if (!ignored(e.message)) errors.push(`page error: ${e.message}`); });
      page.on("console", (m) => {
        if (m.type() === "error" && !ignored(m.text())) errors.push(`console: ${m.text()}`);
      });
      await page.route("**/*", (route) => {
        const url = route.request().url();
        if (url.startsWith(base) || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
        errors.push(`external request blocked: ${url}`);
        return route.abort();
      });
      await page.goto(`${base}/${file}`, { waitUntil: "load" });
      // Pages whose stored widget state has a slider (tqdm progress bars are widgets too).
      const states = await page.locator('script[type="application/vnd.jupyter.widget-state+json"]').allTextContents();
      const hasSlider = states.some((text) => /"model_name":\s*"\w*SliderModel"/.test(text));
      let note = "";
      if (hasSlider) {
        await page.waitForSelector(".widget-slider, .widget-hslider", { timeout: 20000 });
        await page.waitForTimeout(500);
        const handle = page.locator("[role=slider]").first();
        await handle.scrollIntoViewIfNeeded();
        const before = await page.evaluate(visibleFrames);
        const valueBefore = await handle.getAttribute("aria-valuenow");
        // Move away from the end the slider starts at (the explorer opens at its last layer).
        const atMax = valueBefore === (await handle.getAttribute("aria-valuemax"));
        const [forth, back] = atMax ? ["ArrowLeft", "ArrowRight"] : ["ArrowRight", "ArrowLeft"];
        await handle.focus();
        await page.keyboard.press(forth);
        await page.keyboard.press(forth);
        await page.waitForTimeout(500);
        const after = await page.evaluate(visibleFrames);
        const valueAfter = await handle.getAttribute("aria-valuenow");
        const changed = before.length > 0 && JSON.stringify(before) !== JSON.stringify(after);
        note = ` slider ${valueBefore} -> ${valueAfter}, visible frame ${changed ? "changed" : "DID NOT change"}`;
        if (!changed) problems.push(`${file}: the slider did not change the visible frame`);
        // Back to where it was, so the screenshot shows the page as a reader first sees it.
        await page.keyboard.press(back);
        await page.keyboard.press(back);
        await page.waitForTimeout(300);
      }
      // Tabs (the explorer's ToggleButtons over image sets): each must show frames of its own.
      const tabs = page.locator(".widget-toggle-buttons button");
      const nTabs = await tabs.count();
      if (nTabs > 1) {
        const seen = [JSON.stringify(await page.evaluate(visibleFrames))];
        let shown = 1;
        for (let t = 1; t < nTabs; t++) {
          await tabs.nth(t).click();
          await page.waitForTimeout(400);
          const frames = JSON.stringify(await page.evaluate(visibleFrames));
          if (frames === "[]" || seen.includes(frames)) {
            problems.push(`${file}: tab ${t + 1} of ${nTabs} did not show frames of its own`);
          } else {
            shown += 1;
          }
          seen.push(frames);
        }
        await tabs.nth(0).click();
        await page.waitForTimeout(300);
        note += `; ${shown} of ${nTabs} tabs showed their own frames`;
      }
      // Top of the page, nothing focused: sticky header and sidebar where a reader sees them.
      await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
      await page.waitForTimeout(300);
      const shot = join(outDir, file.replace(/\.html$/, ".png"));
      await page.screenshot({ path: shot, fullPage: true });
      for (const e of errors) problems.push(`${file}: ${e}`);
      console.log(`${file}: ${shot}${note}${errors.length ? ` (${errors.length} problems)` : ""}`);
      await page.close();
    }
  } finally {
    await browser.close();
    server.close();
  }
  if (problems.length) {
    console.error(problems.join("\n"));
    process.exit(1);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
