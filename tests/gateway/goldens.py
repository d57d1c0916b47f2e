"""Golden bytes: what each encoder sends for one fixed answer (text in two deltas, one tool call, usage).

Reviewed against each protocol's reference (protocols.md, the SDKs' types) when written; a change here is a
wire-format change that every client sees. ``test_codec_encode.py`` rebuilds each from the encoders.
Fixed inputs: ids from a counter per codec, the clock at 2026-01-01T00:00:00Z, the model "local", and
Usage(uncached 12, cache read 100, cache write 8, output 20), ttft 0.25 s, total 1.5 s.
"""

OPENAI_CHAT_STREAM = (
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"local","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}\n'
    "\n"
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"local","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}],"usage":null}\n'
    "\n"
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"local","choices":[{"index":0,"delta":{"content":"lo!"},"logprobs":null,"finish_reason":null}],"usage":null}\n'
    "\n"
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"local","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}\n'
    "\n"
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"local","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}\n'
    "\n"
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"local","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":20,"total_tokens":140,"prompt_tokens_details":{"cached_tokens":100,"cache_write_tokens":8}}}\n'
    "\n"
    "data: [DONE]\n"
    "\n"
)

OPENAI_RESPONSES_STREAM = (
    "event: response.created\n"
    'data: {"type":"response.created","response":{"id":"resp_1","object":"response","created_at":1767225600,"status":"in_progress","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"local","output":[],"parallel_tool_calls":true,"previous_response_id":null,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"usage":null,"metadata":{}},"sequence_number":0}\n'
    "\n"
    "event: response.in_progress\n"
    'data: {"type":"response.in_progress","response":{"id":"resp_1","object":"response","created_at":1767225600,"status":"in_progress","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"local","output":[],"parallel_tool_calls":true,"previous_response_id":null,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"usage":null,"metadata":{}},"sequence_number":1}\n'
    "\n"
    "event: response.output_item.added\n"
    'data: {"type":"response.output_item.added","output_index":0,"item":{"id":"msg_2","type":"message","status":"in_progress","role":"assistant","content":[]},"sequence_number":2}\n'
    "\n"
    "event: response.content_part.added\n"
    'data: {"type":"response.content_part.added","item_id":"msg_2","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]},"sequence_number":3}\n'
    "\n"
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","item_id":"msg_2","output_index":0,"content_index":0,"delta":"Hel","logprobs":[],"sequence_number":4}\n'
    "\n"
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","item_id":"msg_2","output_index":0,"content_index":0,"delta":"lo!","logprobs":[],"sequence_number":5}\n'
    "\n"
    "event: response.output_text.done\n"
    'data: {"type":"response.output_text.done","item_id":"msg_2","output_index":0,"content_index":0,"text":"Hello!","logprobs":[],"sequence_number":6}\n'
    "\n"
    "event: response.content_part.done\n"
    'data: {"type":"response.content_part.done","item_id":"msg_2","output_index":0,"content_index":0,"part":{"type":"output_text","text":"Hello!","annotations":[],"logprobs":[]},"sequence_number":7}\n'
    "\n"
    "event: response.output_item.done\n"
    'data: {"type":"response.output_item.done","output_index":0,"item":{"id":"msg_2","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello!","annotations":[],"logprobs":[]}]},"sequence_number":8}\n'
    "\n"
    "event: response.output_item.added\n"
    'data: {"type":"response.output_item.added","output_index":1,"item":{"id":"fc_3","type":"function_call","status":"in_progress","arguments":"","call_id":"call_1","name":"get_weather"},"sequence_number":9}\n'
    "\n"
    "event: response.function_call_arguments.delta\n"
    'data: {"type":"response.function_call_arguments.delta","item_id":"fc_3","output_index":1,"delta":"{\\"city\\":\\"Paris\\"}","sequence_number":10}\n'
    "\n"
    "event: response.function_call_arguments.done\n"
    'data: {"type":"response.function_call_arguments.done","item_id":"fc_3","output_index":1,"arguments":"{\\"city\\":\\"Paris\\"}","sequence_number":11}\n'
    "\n"
    "event: response.output_item.done\n"
    'data: {"type":"response.output_item.done","output_index":1,"item":{"id":"fc_3","type":"function_call","status":"completed","arguments":"{\\"city\\":\\"Paris\\"}","call_id":"call_1","name":"get_weather"},"sequence_number":12}\n'
    "\n"
    "event: response.completed\n"
    'data: {"type":"response.completed","response":{"id":"resp_1","object":"response","created_at":1767225600,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"local","output":[{"id":"msg_2","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello!","annotations":[],"logprobs":[]}]},{"id":"fc_3","type":"function_call","status":"completed","arguments":"{\\"city\\":\\"Paris\\"}","call_id":"call_1","name":"get_weather"}],"parallel_tool_calls":true,"previous_response_id":null,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"usage":{"input_tokens":120,"input_tokens_details":{"cached_tokens":100,"cache_write_tokens":8},"output_tokens":20,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":140},"metadata":{}},"sequence_number":13}\n'
    "\n"
)

ANTHROPIC_STREAM = (
    "event: message_start\n"
    'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"local","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}\n'
    "\n"
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n'
    "\n"
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}\n'
    "\n"
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo!"}}\n'
    "\n"
    "event: content_block_stop\n"
    'data: {"type":"content_block_stop","index":0}\n'
    "\n"
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"call_1","name":"get_weather","input":{}}}\n'
    "\n"
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\":\\"Paris\\"}"}}\n'
    "\n"
    "event: content_block_stop\n"
    'data: {"type":"content_block_stop","index":1}\n'
    "\n"
    "event: message_delta\n"
    'data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"input_tokens":12,"cache_creation_input_tokens":8,"cache_read_input_tokens":100,"cache_creation":{"ephemeral_5m_input_tokens":8,"ephemeral_1h_input_tokens":0},"output_tokens":20}}\n'
    "\n"
    "event: message_stop\n"
    'data: {"type":"message_stop"}\n'
    "\n"
)

OLLAMA_CHAT_STREAM = (
    '{"model":"local","created_at":"2026-01-01T00:00:00.000000000Z","message":{"role":"assistant","content":"Hel"},"done":false}\n'
    '{"model":"local","created_at":"2026-01-01T00:00:00.000000000Z","message":{"role":"assistant","content":"lo!"},"done":false}\n'
    '{"model":"local","created_at":"2026-01-01T00:00:00.000000000Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_1","function":{"index":0,"name":"get_weather","arguments":{"city":"Paris"}}}]},"done":false}\n'
    '{"model":"local","created_at":"2026-01-01T00:00:00.000000000Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":1500000000,"eval_duration":1250000000,"prompt_eval_count":120,"eval_count":20}\n'
)

OLLAMA_GENERATE_STREAM = (
    '{"model":"local","created_at":"2026-01-01T00:00:00.000000000Z","response":"Hel","done":false}\n'
    '{"model":"local","created_at":"2026-01-01T00:00:00.000000000Z","response":"lo!","done":false}\n'
    '{"model":"local","created_at":"2026-01-01T00:00:00.000000000Z","response":"","done":true,"done_reason":"stop","total_duration":1500000000,"eval_duration":1250000000,"prompt_eval_count":120,"eval_count":20}\n'
)

OPENAI_CHAT_JSON = '{"id":"chatcmpl-1","object":"chat.completion","created":1767225600,"model":"local","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":120,"completion_tokens":20,"total_tokens":140,"prompt_tokens_details":{"cached_tokens":100,"cache_write_tokens":8}}}'

OPENAI_RESPONSES_JSON = '{"id":"resp_1","object":"response","created_at":1767225600,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"local","output":[{"id":"msg_2","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello!","annotations":[],"logprobs":[]}]},{"id":"fc_3","type":"function_call","status":"completed","arguments":"{\\"city\\":\\"Paris\\"}","call_id":"call_1","name":"get_weather"}],"parallel_tool_calls":true,"previous_response_id":null,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"usage":{"input_tokens":120,"input_tokens_details":{"cached_tokens":100,"cache_write_tokens":8},"output_tokens":20,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":140},"metadata":{}}'

ANTHROPIC_JSON = '{"id":"msg_1","type":"message","role":"assistant","model":"local","content":[{"type":"text","text":"Hello!"},{"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":8,"cache_read_input_tokens":100,"cache_creation":{"ephemeral_5m_input_tokens":8,"ephemeral_1h_input_tokens":0},"output_tokens":20}}'

OLLAMA_CHAT_JSON = '{"model":"local","created_at":"2026-01-01T00:00:00.000000000Z","message":{"role":"assistant","content":"Hello!","tool_calls":[{"id":"call_1","function":{"index":0,"name":"get_weather","arguments":{"city":"Paris"}}}]},"done":true,"done_reason":"stop","total_duration":1500000000,"eval_duration":1250000000,"prompt_eval_count":120,"eval_count":20}'
