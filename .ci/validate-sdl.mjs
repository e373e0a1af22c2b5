// Validates Akash SDL files with Akash's own code (@akashnetwork/chain-sdk,
// installed into .ci/node_modules by .ci/run): validateSDL checks the file
// against the SDL schema, and building the SDL object and its manifest
// applies the rules a deployment is accepted by (profiles, placements,
// pricing, exposes). Prints each problem and exits 1 if there is any.
//
//   node .ci/validate-sdl.mjs deploy.yaml [more.yaml ...]
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import { SDL, validateSDL } from "@akashnetwork/chain-sdk";

let failed = false;
for (const path of process.argv.slice(2)) {
  const text = readFileSync(path, "utf8");
  const problems = (validateSDL(yaml.load(text), "mainnet") ?? []).map(
    (error) => `${error.instancePath || "/"}: ${error.message}`,
  );
  if (problems.length === 0) {
    try {
      SDL.fromString(text, "beta3", "mainnet").manifest();
    } catch (error) {
      problems.push(error.message);
    }
  }
  for (const problem of problems) console.error(`${path}: ${problem}`);
  if (problems.length > 0) failed = true;
  else console.log(`${path}: valid Akash SDL`);
}
process.exit(failed ? 1 : 0);
