// Drives LuCI in Debian's headless Chromium for the box's checks, as a user
// at a LAN host would: it runs one list of steps in one browser session and
// prints one JSON object, {"results": [...]} or {"error": "...", "results": [...]}.
//
//   node luci.mjs BASE_URL OUT_DIR STEPS_JSON
//
// BOX_NODE_MODULES names the node_modules holding playwright-core. Steps:
//   {"login": [user, password]}       log in on LuCI's login form
//   {"open": "admin/network/..."}     open a page and wait for its view
//   {"shot": "name"}                  screenshot to OUT_DIR/name.png
//   {"text": true}                    the page's visible text
//   {"check": [optionName, bool]}     tick or untick a form flag
//   {"fill": [optionName, value]}     type into a form value, then leave it
//   {"save": true}                    Save & Apply; wait until applied
//   {"wait": ms}                      sleep
//   {"waitText": [text, ms]}          wait until the page shows text
//   {"controls": true}                every input's and button's label and
//                                      whether it is disabled
import { createRequire } from 'node:module';

const require = createRequire(process.env.BOX_NODE_MODULES + '/');
const { chromium } = require('playwright-core');

const [base, outDir, stepsJSON] = process.argv.slice(2);
const steps = JSON.parse(stepsJSON);
const results = [];

// LuCI's form rows are named after the UCI option (cbi-CONFIG-SECTION-OPTION).
const row = (name) => `[id="cbi-pptp-alg-main-${name}"]`;
const checkbox = (name) => `${row(name)} input[type=checkbox]`;
const textField = (name) => `${row(name)} input[type=text], ${row(name)} input:not([type])`;

async function settle(page) {
	await page.waitForLoadState('networkidle', { timeout: 15000 }).catch(() => {});
	// LuCI renders views after its own requests; a view is there when the
	// spinner is gone.
	await page.waitForFunction(() => !document.querySelector('#view .spinning, #maincontent .spinning'),
		null, { timeout: 15000 }).catch(() => {});
}

const browser = await chromium.launch({
	executablePath: '/usr/bin/chromium',
	args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
		'--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let code = 0;
try {
	const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
	const page = await context.newPage();
	page.setDefaultTimeout(15000);
	for (const step of steps) {
		const [kind, arg] = Object.entries(step)[0];
		const r = { step: kind };
		if (kind === 'login') {
			await page.goto(base + '/cgi-bin/luci/');
			await page.fill('input[name=luci_username]', arg[0]);
			await page.fill('input[name=luci_password]', arg[1]);
			await Promise.all([page.waitForNavigation(), page.press('input[name=luci_password]', 'Enter')]);
			await settle(page);
			r.loggedIn = (await page.locator('input[name=luci_password]').count()) === 0;
		} else if (kind === 'open') {
			await page.goto(base + '/cgi-bin/luci/' + arg);
			await settle(page);
			r.title = await page.title();
		} else if (kind === 'shot') {
			await page.screenshot({ path: `${outDir}/${arg}.png`, fullPage: true });
			r.file = `${outDir}/${arg}.png`;
		} else if (kind === 'text') {
			r.text = await page.locator('body').innerText();
		} else if (kind === 'check') {
			const box = page.locator(checkbox(arg[0])).first();
			if ((await box.isChecked()) !== arg[1])
				await box.click();
			r.checked = await box.isChecked();
		} else if (kind === 'fill') {
			const input = page.locator(textField(arg[0])).first();
			await input.fill(String(arg[1]));
			await input.press('Tab');
			r.invalid = await input.evaluate((el) => el.classList.contains('cbi-input-invalid') ||
				!!el.closest('.cbi-value-error, .cbi-input-invalid'));
		} else if (kind === 'save') {
			await page.locator('.cbi-page-actions button.cbi-button-apply, .cbi-page-actions .cbi-button-apply').first().click();
			// Either LuCI refuses the form (an error notification, the
			// page stays), or it applies and says so.
			const done = await Promise.race([
				page.waitForFunction(() => /Configuration changes (have been )?applied|No changes to apply/i.test(document.body.innerText),
					null, { timeout: 60000 }).then(() => 'applied'),
				// LuCI refuses in a "Save error" dialog or a notification.
				page.waitForFunction(() => /invalid|Some fields are/i.test(
					Array.from(document.querySelectorAll('.modal, .alert-message, .cbi-section-error, .cbi-value-error'))
						.map((e) => e.innerText).join(' ')),
					null, { timeout: 60000 }).then(() => 'refused'),
			]).catch((e) => 'timeout: ' + e.message);
			r.outcome = done;
			await page.waitForTimeout(500);
			r.text = await page.locator('body').innerText();
		} else if (kind === 'wait') {
			await page.waitForTimeout(arg);
		} else if (kind === 'waitText') {
			r.found = await page.waitForFunction((t) => document.body.innerText.includes(t), arg[0],
				{ timeout: arg[1] }).then(() => true, () => false);
			r.text = await page.locator('body').innerText();
		} else if (kind === 'controls') {
			r.controls = await page.evaluate(() => Array.from(document.querySelectorAll(
				'#maincontent input, #maincontent select, #maincontent button, #maincontent textarea, #view input, #view button, #view select'))
				.filter((e) => e.type !== 'hidden')
				.map((e) => ({
					tag: e.tagName.toLowerCase(),
					type: e.type || '',
					id: e.id || '',
					label: (e.innerText || e.value || e.title || e.getAttribute('aria-label') || '').trim().slice(0, 60),
					disabled: e.disabled || e.readOnly || e.getAttribute('aria-disabled') === 'true' ||
						!!e.closest('[disabled]') || e.classList.contains('disabled'),
				})));
		} else {
			throw new Error('unknown step ' + kind);
		}
		results.push(r);
	}
	process.stdout.write(JSON.stringify({ results }));
} catch (e) {
	process.stdout.write(JSON.stringify({ error: String(e && e.message || e), results }));
	code = 1;
} finally {
	await browser.close();
}
process.exit(code);
