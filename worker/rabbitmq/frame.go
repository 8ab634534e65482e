package rabbitmq

import (
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/revsync/revsync/worker"
)

// HeaderHeadersDropped is set on a copy (dead-letter, retry, replay) whose
// original headers had to be dropped for the copy to fit in one frame: it
// counts the headers dropped.
const HeaderHeadersDropped = "x-revsync-headers-dropped"

// maxHeaderBytes bounds the encoded headers of a copy. RabbitMQ's default
// frame_max is 128 KiB and a message's properties travel in one frame; a
// copy over it makes the broker close the connection (FRAME_ERROR), which
// would redeliver the original again and again. The rest of the frame is
// left for the other properties.
const maxHeaderBytes = 120 << 10

// fitHeaders returns h, or when its encoding would not fit in a frame, h
// without the original (non x-revsync-*) headers and with the reasons cut
// short, noting how many headers were dropped.
func fitHeaders(h amqp.Table) amqp.Table {
	if tableSize(h) <= maxHeaderBytes {
		return h
	}
	fitted := amqp.Table{}
	dropped := 0
	for k, v := range h {
		if strings.HasPrefix(k, "x-revsync-") {
			fitted[k] = v
		} else {
			dropped++
		}
	}
	for _, k := range []string{worker.HeaderError, worker.HeaderRetryReason} {
		if s, ok := fitted[k].(string); ok && len(s) > 1024 {
			fitted[k] = s[:1024]
		}
	}
	fitted[HeaderHeadersDropped] = int32(dropped)
	return fitted
}

// tableSize estimates the AMQP field-table encoding of t, in bytes, from
// above: every field is its name, a type byte and its value.
func tableSize(t amqp.Table) int {
	n := 4
	for k, v := range t {
		n += 1 + len(k) + 1 + valueSize(v)
	}
	return n
}

func valueSize(v any) int {
	switch v := v.(type) {
	case string:
		return 4 + len(v)
	case []byte:
		return 4 + len(v)
	case amqp.Table:
		return tableSize(v)
	case []any:
		n := 4
		for _, e := range v {
			n += 1 + valueSize(e)
		}
		return n
	case bool, int8, uint8:
		return 1
	case int16, uint16:
		return 2
	case int32, uint32, float32:
		return 4
	case amqp.Decimal:
		return 5
	case time.Time:
		return 8
	default:
		return 8
	}
}
