#pragma TextEncoding = "UTF-8"
#pragma rtGlobals = 3
#pragma ModuleName = rtclassify_bridge

// rtclassify bridge for MIES (Igor Pro 9, MIES with the ZeroMQ-XOP).
//
// NOT RUN HERE: Igor Pro and MIES do not run on the machine this project is built on. This file
// is written against MIES's documented analysis-function interface (AnalysisFunction_V3) and the
// ZeroMQ-XOP's publisher/subscriber calls; see docs/plugins.md for what is known to hold and what
// must be checked on a rig before relying on it.
//
// What it does
//  1. RTC_SendSweep is a MIES analysis function (V3). Attach it to the short-square stimulus set
//     and to the long-step family (Wavebuilder -> Analysis functions -> "Generic"): the daemon tells
//     them apart by the step's length and answers a long step with its features. At POST_SWEEP_EVENT it takes the finished
//     sweep's membrane potential (AD channel of the headstage, mV in current clamp) and command
//     (DA channel, pA), and publishes them on the XOP's PUB socket in the rtclassify input format
//     (../shared/CONTRACT.md): frames [b"data", header JSON, float32 (V, I) interleaved].
//     Start the daemon with: rtclassify serve --source zmq --connect tcp://127.0.0.1:5670 \
//                                            --publish tcp://127.0.0.1:5561 --model genetic5
//     (5670 is the port MIES binds its publisher to; the daemon only subscribes to "data" and
//     "event" topics and ignores MIES's own messages.)
//  2. RTC_StartLabels subscribes to the daemon's labels and shows the current verdict per
//     headstage in a small panel, refreshed by a background task.
//  3. RTC_NewCell(headstage, cellID) announces a new cell so that the verdict starts afresh.

static StrConstant RTC_LABELS_ENDPOINT = "tcp://127.0.0.1:5561"
static StrConstant RTC_DEVICE_FIELD = "mies"
static StrConstant RTC_PANEL = "rtclassifyLabels"

/// Per-headstage counters, kept continuous across sweeps as the contract requires.
static Function/WAVE RTC_Counters()
	DFREF dfr = root:
	WAVE/Z/D counters = dfr:rtclassify_counters
	if(!WaveExists(counters))
		Make/D/N=(8, 2) dfr:rtclassify_counters = 0 // [headstage][first_sample, seq]
		WAVE/D counters = dfr:rtclassify_counters
	endif
	return counters
End

Function RTC_SendSweep(string device, STRUCT AnalysisFunction_V3 &s)
	variable hs, adc, dac, n, fs, first, seq
	string header

	if(s.eventType != POST_SWEEP_EVENT)
		return 0
	endif

	hs  = s.headStage
	adc = AFH_GetADCFromHeadstage(device, hs)
	dac = AFH_GetDACFromHeadstage(device, hs)
	WAVE/Z sweep  = GetSweepWave(device, s.sweepNo)
	WAVE/Z config = GetConfigWave(sweep)
	if(!WaveExists(sweep) || !WaveExists(config))
		printf "rtclassify: sweep %d of %s not found; not sent\r", s.sweepNo, device
		return 0
	endif
	WAVE/Z v = AFH_ExtractOneDimDataFromSweep(device, sweep, adc, XOP_CHANNEL_TYPE_ADC, config = config)
	WAVE/Z i = AFH_ExtractOneDimDataFromSweep(device, sweep, dac, XOP_CHANNEL_TYPE_DAC, config = config)
	if(!WaveExists(v) || !WaveExists(i))
		printf "rtclassify: headstage %d has no AD/DA data in sweep %d; not sent\r", hs, s.sweepNo
		return 0
	endif

	n  = DimSize(v, 0)
	fs = 1000 / DimDelta(v, 0) // MIES stores the sample interval in ms
	WAVE counters = RTC_Counters()
	first = counters[hs][0]
	seq   = counters[hs][1]

	Make/FREE/R/N=(2 * n) payload // float32, V and I interleaved per sample
	payload[] = mod(p, 2) == 0 ? v[p / 2] : i[(p - 1) / 2]

	sprintf header, "{\"v\": 1, \"device\": \"%s\", \"headstage\": %d, \"seq\": %d, \"first_sample\": %d, \"n_samples\": %d, \"fs\": %.17g, \"channels\": [\"V\", \"I\"], \"units\": [\"mV\", \"pA\"], \"dtype\": \"<f4\"}", RTC_DEVICE_FIELD, hs, seq, first, n, fs

	Make/FREE/T topicFrame = {"data"}
	Make/FREE/T headerFrame = {header}
	Make/FREE/WAVE frames = {topicFrame, headerFrame, payload}
	zeromq_pub_send_multi(frames)

	counters[hs][0] = first + n
	counters[hs][1] = seq + 1
	return 0
End

Function RTC_NewCell(variable headstage, string cellID)
	string event
	WAVE counters = RTC_Counters()
	sprintf event, "{\"v\": 1, \"type\": \"new_cell\", \"headstage\": %d, \"cell_id\": \"%s\", \"sample\": %d}", headstage, cellID, counters[headstage][0]
	Make/FREE/T topicFrame = {"event"}
	Make/FREE/T eventFrame = {event}
	Make/FREE/WAVE frames = {topicFrame, eventFrame}
	zeromq_pub_send_multi(frames)
End

Function RTC_StartLabels()
	zeromq_sub_connect(RTC_LABELS_ENDPOINT)
	zeromq_sub_add_filter("label")
	zeromq_sub_add_filter("heartbeat")
	NewPanel/N=$RTC_PANEL/W=(20, 20, 420, 140) as "rtclassify"
	TitleBox verdict, win=$RTC_PANEL, pos={10, 10}, fSize=20, frame=0, title="waiting for a label"
	TitleBox fresh, win=$RTC_PANEL, pos={10, 60}, fSize=12, frame=0, title="no heartbeat yet"
	CtrlNamedBackground rtclassify, period=6, proc=rtclassify_bridge#RTC_PollLabels, start
End

static Function RTC_PollLabels(STRUCT WMBackgroundStruct &bg)
	string msg, filter, cellLabel
	variable jsonID, nWindows, headstage

	for(;;)
		msg = zeromq_sub_recv(filter)
		if(!strlen(msg))
			break
		endif
		if(!cmpstr(filter, "heartbeat"))
			TitleBox fresh, win=$RTC_PANEL, title="daemon alive at " + time()
			continue
		endif
		jsonID    = JSON_Parse(msg)
		headstage = JSON_GetVariable(jsonID, "/headstage")
		cellLabel = JSON_GetString(jsonID, "/cell/label")
		nWindows  = JSON_GetVariable(jsonID, "/cell/n_windows")
		JSON_Release(jsonID)
		TitleBox verdict, win=$RTC_PANEL, title="HS" + num2str(headstage) + ": " + cellLabel + " (" + num2str(nWindows) + " sweeps)"
	endfor
	return 0
End
