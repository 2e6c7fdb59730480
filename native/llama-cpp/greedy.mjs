// Greedy answers from llama.cpp itself (node-llama-cpp, on the same prebuilt libllama that quantizes the GGUF
// export), for jobs.training.llama_cpp_lib.greedy_answers. Reads on stdin
// {"runs": [{"model": path, "lora": path or null}], "prompts": [[token ids]], "new_tokens": n} and prints one JSON
// list: per run, per prompt, the answer's token ids (it ends at an end-of-generation token, which it keeps, or
// after n tokens).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const {runs, prompts, new_tokens: newTokens} = JSON.parse(input);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const answers = [];
for (const run of runs) {
    const model = await llama.loadModel({modelPath: run.model});
    const context = await model.createContext({contextSize: 1024, threads: 2, ...(run.lora ? {lora: run.lora} : {})});
    const sequence = context.getSequence();
    const runAnswers = [];
    for (const prompt of prompts) {
        await sequence.clearHistory();
        const answer = [];
        for await (const token of sequence.evaluate(prompt, {temperature: 0, yieldEogToken: true})) {
            answer.push(token);
            if (answer.length >= newTokens || model.isEogToken(token)) break;
        }
        runAnswers.push(answer);
    }
    answers.push(runAnswers);
    await context.dispose();
    await model.dispose();
}
console.log(JSON.stringify(answers));
