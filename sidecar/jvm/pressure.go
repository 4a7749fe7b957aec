package jvm

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Thresholds decide when a JVM is short of memory. A threshold of zero (or
// less) turns its test off.
type Thresholds struct {
	// OldGenOccupancy is the share (0..1) of the old generation's maximum
	// size in use at or above which the JVM is under pressure.
	OldGenOccupancy float64
	// GCTimeShare is the share (0..1) of the JVM's uptime spent in garbage
	// collection at or above which the JVM is under pressure.
	GCTimeShare float64
	// MinUptime is the age a JVM must have for its GC time share to count:
	// the collections of its first seconds (class loading, caches filling)
	// make the share of a young JVM meaningless.
	MinUptime time.Duration
}

// DefaultThresholds returns the thresholds of the on-pressure preStop policy:
// 80% of the old generation in use, or 10% of the uptime spent in GC for a
// JVM older than a minute.
func DefaultThresholds() Thresholds {
	return Thresholds{OldGenOccupancy: 0.80, GCTimeShare: 0.10, MinUptime: time.Minute}
}

// PressureReport is what Pressure found.
type PressureReport struct {
	// Under says that a threshold was reached.
	Under bool
	// Reason explains the verdict with the numbers, e.g.
	// "old generation 88% full (56.1 MiB of 64.0 MiB) >= 80%; GC 3.1% of 4.5s uptime < 10%".
	Reason string
	// Collector is sun.gc.policy.name (e.g. GarbageFirst, ParScav:MSC,
	// Copy:MSC), else the first collector's name.
	Collector string
	// OldUsed, OldCapacity and OldMax are the old generation's bytes in
	// use, committed and at most (sun.gc.generation.1.space.0.used,
	// .capacity, .maxCapacity); for ZGC and Shenandoah that space is the
	// whole heap.
	OldUsed, OldCapacity, OldMax int64
	// OldOccupancy is OldUsed/OldMax (OldUsed/OldCapacity when the maximum
	// is unknown).
	OldOccupancy float64
	// GCTime is the time spent in all collectors since the JVM started
	// (sum of sun.gc.collector.*.time), GCCount their invocations.
	GCTime  time.Duration
	GCCount int64
	// Uptime is the JVM's age (sun.os.hrt.ticks / sun.os.hrt.frequency).
	Uptime time.Duration
	// GCTimeShare is GCTime/Uptime.
	GCTimeShare float64
	// LastCause is sun.gc.lastCause (e.g. "System.gc()", "G1 Evacuation
	// Pause", "Allocation Failure"), "" when no GC ran.
	LastCause string
}

// Pressure tells from the JVM's hsperfdata, without attaching (so without a
// safepoint or any work in the JVM), whether it is short of memory:
//
//   - Old generation occupancy: sun.gc.generation.1.space.0.used over
//     .maxCapacity of that space (else sun.gc.generation.1.maxCapacity, else
//     the committed .capacity). That space is the old generation of G1
//     ("space" of generation "old"), Parallel and Serial ("old"), and the
//     whole heap for ZGC and Shenandoah. The counter is current, not a
//     snapshot taken after the last collection: between collections old
//     generations only grow by promotion (and G1 humongous allocations), so
//     it is the occupancy after the last GC plus what was promoted since,
//     and an old generation that stays near full after collections is what
//     it catches.
//   - GC time share over the JVM's life: the sum of sun.gc.collector.*.time
//     over sun.os.hrt.ticks, both in ticks of sun.os.hrt.frequency. For G1,
//     Parallel and Serial the collector times are stop-the-world pause times
//     (young, full, and G1's remark/cleanup pauses); for ZGC and Shenandoah
//     they are their pauses and cycles as each reports them. A JVM younger
//     than Thresholds.MinUptime is not judged on it.
//
// The JVM is under pressure when either share reaches its threshold. The
// error wraps ErrNoPerfData for a JVM run with -XX:-UsePerfData.
func Pressure(p Process, t Thresholds) (PressureReport, error) {
	d, err := ReadPerfData(p)
	if err != nil {
		return PressureReport{}, err
	}
	return EvaluatePressure(d, t)
}

// EvaluatePressure applies the thresholds to counters read before; see
// Pressure.
func EvaluatePressure(d *PerfData, t Thresholds) (PressureReport, error) {
	var r PressureReport
	const old = "sun.gc.generation.1.space.0."
	used, ok := d.Int(old + "used")
	if !ok {
		return r, fmt.Errorf("hsperfdata has no %sused: not a HotSpot heap this package knows", old)
	}
	r.OldUsed = used
	r.OldCapacity, _ = d.Int(old + "capacity")
	r.OldMax, _ = d.Int(old + "maxCapacity")
	if r.OldMax <= 0 {
		r.OldMax, _ = d.Int("sun.gc.generation.1.maxCapacity")
	}
	denom := r.OldMax
	if denom <= 0 {
		denom = r.OldCapacity
	}
	if denom > 0 {
		r.OldOccupancy = float64(r.OldUsed) / float64(denom)
	}

	freq, _ := d.Int("sun.os.hrt.frequency")
	ticks, _ := d.Int("sun.os.hrt.ticks")
	var gcTicks int64
	for i := 0; ; i++ {
		pre := "sun.gc.collector." + strconv.Itoa(i) + "."
		t, ok := d.Int(pre + "time")
		if !ok {
			break
		}
		n, _ := d.Int(pre + "invocations")
		gcTicks += t
		r.GCCount += n
	}
	if freq > 0 {
		r.GCTime = ticksToDuration(gcTicks, freq)
		r.Uptime = ticksToDuration(ticks, freq)
	}
	if ticks > 0 {
		r.GCTimeShare = float64(gcTicks) / float64(ticks)
	}
	r.Collector, _ = d.String("sun.gc.policy.name")
	if r.Collector == "" {
		r.Collector, _ = d.String("sun.gc.collector.0.name")
	}
	r.LastCause, _ = d.String("sun.gc.lastCause")
	if r.LastCause == "No GC" {
		r.LastCause = ""
	}

	var parts []string
	if t.OldGenOccupancy > 0 {
		cmp := "<"
		if denom > 0 && r.OldOccupancy >= t.OldGenOccupancy {
			cmp, r.Under = ">=", true
		}
		parts = append(parts, fmt.Sprintf("old generation %.0f%% full (%s of %s) %s %.0f%%",
			100*r.OldOccupancy, mib(r.OldUsed), mib(denom), cmp, 100*t.OldGenOccupancy))
	}
	if t.GCTimeShare > 0 {
		gc := fmt.Sprintf("GC %.1f%% of %v uptime (%d collections)", 100*r.GCTimeShare, r.Uptime.Round(time.Millisecond), r.GCCount)
		switch {
		case ticks <= 0 || freq <= 0:
			parts = append(parts, "GC time unknown")
		case r.Uptime < t.MinUptime:
			parts = append(parts, fmt.Sprintf("%s not judged: younger than %v", gc, t.MinUptime))
		case r.GCTimeShare >= t.GCTimeShare:
			r.Under = true
			parts = append(parts, fmt.Sprintf("%s >= %.0f%%", gc, 100*t.GCTimeShare))
		default:
			parts = append(parts, fmt.Sprintf("%s < %.0f%%", gc, 100*t.GCTimeShare))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "no threshold set")
	}
	r.Reason = strings.Join(parts, "; ")
	return r, nil
}

func ticksToDuration(ticks, freq int64) time.Duration {
	return time.Duration(float64(ticks) / float64(freq) * float64(time.Second))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
