package app

import (
	"slices"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapLogger is log for the sidecar packages that still take a *zap.Logger
// (spool, uploader, watch, dumplock): the zap logger under it when log is
// zapr's, as the binary's is, or else one that writes through log.
func zapLogger(log logr.Logger) *zap.Logger {
	if u, ok := log.GetSink().(zapr.Underlier); ok {
		// zapr skips one frame for its own; calls on the zap logger don't go through it.
		return u.GetUnderlying().WithOptions(zap.AddCallerSkip(-1))
	}
	return zap.New(&logrCore{log: log})
}

// logrCore is a zapcore.Core writing to a logr.Logger: zap's debug is V(1),
// error and above are logr errors.
type logrCore struct {
	log    logr.Logger
	fields []zapcore.Field
}

func (c *logrCore) Enabled(l zapcore.Level) bool {
	if l >= zapcore.InfoLevel {
		return c.log.Enabled()
	}
	return c.log.V(int(zapcore.InfoLevel - l)).Enabled()
}

func (c *logrCore) With(fields []zapcore.Field) zapcore.Core {
	return &logrCore{log: c.log, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *logrCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *logrCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(slices.Clip(c.fields), fields...) {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	kv := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		kv = append(kv, k, enc.Fields[k])
	}
	log := c.log
	if e.LoggerName != "" {
		log = log.WithName(e.LoggerName)
	}
	if e.Level >= zapcore.ErrorLevel {
		log.Error(nil, e.Message, kv...)
		return nil
	}
	if e.Level < zapcore.InfoLevel {
		log = log.V(int(zapcore.InfoLevel - e.Level))
	}
	log.Info(e.Message, kv...)
	return nil
}

func (c *logrCore) Sync() error { return nil }
