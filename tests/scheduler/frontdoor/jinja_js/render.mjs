// Renders the chat-template differential cases with Hugging Face's JavaScript Jinja (@huggingface/jinja,
// pinned in deploy/node, installed by deploy/install-deps.sh). Usage:
//   node render.mjs CHAT_TEMPLATES_DIR
// Reads CHAT_TEMPLATES_DIR/conversations.json and each template's tokenizer_config.json, and prints one JSON
// array: per case the template, the conversation, the exact variables it rendered with, and either `output`
// or `error`. jinja_differential_test.cc renders the same variables with Strata's interpreter and compares.
// Exits 3 when the package is missing (the test then skips), 2 on bad usage.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../../../deploy/node/package.json'));
let Template;
try {
  ({ Template } = require('@huggingface/jinja'));
} catch (error) {
  console.error(`@huggingface/jinja is not installed in deploy/node: ${error.message}`);
  process.exit(3);
}

const [dir] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node render.mjs CHAT_TEMPLATES_DIR');
  process.exit(2);
}
const spec = JSON.parse(fs.readFileSync(path.join(dir, 'conversations.json'), 'utf8'));
const cases = [];
for (const name of spec.templates) {
  const config = JSON.parse(fs.readFileSync(path.join(dir, name, 'tokenizer_config.json'), 'utf8'));
  const template = new Template(config.chat_template);
  for (const conversation of spec.conversations) {
    if (conversation.only && !conversation.only.includes(name)) continue;
    if (conversation.except && conversation.except.includes(name)) continue;
    for (const addGenerationPrompt of [false, true]) {
      const variables = structuredClone(conversation.variables);
      variables.bos_token = config.bos_token;
      variables.eos_token = config.eos_token;
      variables.add_generation_prompt = addGenerationPrompt;
      if (!conversation.no_date_string) variables.date_string = '26 Jul 2024';
      const entry = { template: name, conversation: conversation.name, variables };
      try {
        entry.output = template.render(structuredClone(variables));
      } catch (error) {
        entry.error = String(error?.message ?? error);
      }
      cases.push(entry);
    }
  }
}
process.stdout.write(JSON.stringify(cases));
